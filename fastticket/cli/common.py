"""Argument parsers and printers the `fastticket` commands share."""

from __future__ import annotations

import argparse
import os

def levels_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels {text!r}: expected comma-separated fractions, e.g. 0.1,0.2,0.3") from None


def seeds_arg(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def names_arg(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def read_run(run_dir: str):
    import json

    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{run_dir!r} is not a fastticket search run directory ({exc})") from None
    return config, rows


def format_scores(scores) -> str:
    """Head scores normalized per layer (as selection ranks them) and raw FFN scores, one row a layer."""
    from ..tickets.select import normalized_head_scores

    heads = normalized_head_scores(scores)
    lines = ["layer  " + " ".join(f"h{h:<4d}" for h in range(heads.shape[1])) + "  ffn (raw)"]
    for l in range(heads.shape[0]):
        lines.append(f"{l:5d}  " + " ".join(f"{v:.3f}" for v in heads[l].tolist()) + f"  {scores.ffn[l].item():.3e}")
    return "\n".join(lines)


def format_ticket(ticket) -> str:
    lines = ["layer  heads (# kept, . pruned)  ffn"]
    for l in range(ticket.num_layers):
        row = "".join("#" if k else "." for k in ticket.heads[l].tolist())
        lines.append(f"{l:5d}  {row:<24s} {'kept' if ticket.ffn[l] else 'pruned'}")
    lines.append(f"heads kept {int(ticket.heads.sum())}/{ticket.heads.numel()}, "
                 f"FFNs kept {int(ticket.ffn.sum())}/{ticket.ffn.numel()}")
    return "\n".join(lines)


def seeded_subsets(task, args):
    from ..data.batching import seeded_subset

    if args.max_train_examples:
        task.train = seeded_subset(task.train, args.max_train_examples, seed=args.seed)
    if args.max_eval_examples:
        task.dev = seeded_subset(task.dev, args.max_eval_examples, seed=args.seed)
    return task


