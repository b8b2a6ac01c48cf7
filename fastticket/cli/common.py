"""Argument parsers and printers the `fastticket` commands share."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

def fractions_arg(option: str, example: str = "0.1,0.2,0.3"):
    """An argparse type for comma-separated fractions whose error names `option`."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: expected comma-separated fractions, e.g. {example}") from None

    parse.__name__ = option.lstrip("-").replace("-", "_")  # argparse names the type in some messages
    return parse


levels_arg = fractions_arg("--levels")


def seeds_arg(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def names_arg(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


RUN_ROW_KEYS = ("kind", "level", "seed", "selection_score", "heldout_score", "weights_remaining", "heads_kept", "ffn_kept")


def read_run(run_dir: str):
    """(config, rows) of a `fastticket search` run directory; one ValueError naming the file and what is wrong."""
    from ..rundir import owner
    from ..tickets.store import read_json

    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir!r} is not a fastticket search run directory (no such directory)")
    found = owner(run_dir)
    if found not in (None, "search"):
        raise ValueError(f"{run_dir!r} holds a `fastticket {found}` run, not a `fastticket search` run")
    config_file, results_file = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "results.json")
    for file in (config_file, results_file):
        if not os.path.isfile(file):
            raise ValueError(f"{run_dir!r} is not a fastticket search run directory (no {os.path.basename(file)})")
    config, results = read_json(config_file, "run configuration"), read_json(results_file, "results file")
    if not isinstance(config, dict):
        raise ValueError(f"run configuration {config_file} is not a JSON object")
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"results file {results_file} has no list of rows (\"rows\")")
    for i, row in enumerate(rows):
        missing = [k for k in RUN_ROW_KEYS if not isinstance(row, dict) or k not in row]
        bad = [k for k in RUN_ROW_KEYS if k not in missing and k not in ("kind",)
               and (isinstance(row[k], bool) or not isinstance(row[k], (int, float)))]
        if missing or bad or row["kind"] not in ("full", "winning", "random", "losing"):
            what = f"lacks {missing}" if missing else f"has non-numeric {bad}" if bad else f"has kind {row['kind']!r}"
            raise ValueError(f"results file {results_file} is corrupt: row {i} {what}")
    counts = Counter(row["id"] for row in rows if isinstance(row.get("id"), str))
    twice = sorted(i for i, n in counts.items() if n > 1)
    if twice:  # one trial counted twice would skew every mean and the super-ticket choice
        raise ValueError(f"results file {results_file} is corrupt: trial {twice[0]!r} has {counts[twice[0]]} rows")
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
        neurons = "" if ticket.neurons is None or not ticket.ffn[l] else f" ({int(ticket.neurons[l].sum())}/{ticket.neurons.shape[1]} neurons)"
        lines.append(f"{l:5d}  {row:<24s} {'kept' if ticket.ffn[l] else 'pruned'}{neurons}")
    lines.append(f"heads kept {int(ticket.heads.sum())}/{ticket.heads.numel()}, "
                 f"FFNs kept {int(ticket.ffn.sum())}/{ticket.ffn.numel()}")
    return "\n".join(lines)


def add_local_task_options(p) -> None:
    p.add_argument("--text-columns", type=names_arg, default=None,
                   help="--task local: the text column, or two (a pair), e.g. premise,hypothesis (default: text or "
                        "sentence, with text_pair or sentence2 when present)")
    p.add_argument("--label-column", default=None, help="--task local: the label column (default: label)")
    p.add_argument("--label-names", type=names_arg, default=None,
                   help="--task local: every class name in id order (labels may then be these names or ids)")
    p.add_argument("--regression", action="store_true", default=None, help="--task local: numeric labels, a regression task")


def local_task_options(args, task: str) -> dict:
    """load_task's keyword arguments for --task local from the options above; ValueError if given for another task."""
    given = {k: getattr(args, k, None) for k in ("text_columns", "label_column", "label_names", "regression")}
    given = {k: v for k, v in given.items() if v is not None}
    if given and task != "local":
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{names} are for --task local (the task is {task!r})")
    if "text_columns" in given and not 1 <= len(given["text_columns"]) <= 2:
        raise ValueError(f"--text-columns {','.join(given['text_columns'])!r}; allowed: one column, or two (a pair) A,B")
    return given


def seeded_subsets(task, args):
    from ..data.batching import seeded_subset

    if args.max_train_examples:
        task.train = seeded_subset(task.train, args.max_train_examples, seed=args.seed)
    if args.max_eval_examples:
        task.dev = seeded_subset(task.dev, args.max_eval_examples, seed=args.seed)
    return task


LAUNCHED_VARIABLE = "FASTTICKET_LAUNCHED"  # set by --nproc's launcher: it reports the workers' errors


def run_as_worker(command: str, fn, args) -> int:
    """fn(args); in a torchrun worker an error is recorded for the job's report (distributed.record_failure),
    and a worker stopped by another's failure prints one line (nothing when --nproc's launcher reports it)."""
    from ..distributed import WorkerFailed, in_torchrun, record_failure

    if not in_torchrun():
        return fn(args)
    try:
        return fn(args)
    except WorkerFailed as exc:
        if not os.environ.get(LAUNCHED_VARIABLE):
            print(f"fastticket {command}: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        record_failure(exc)
        if isinstance(exc, ValueError) and os.environ.get(LAUNCHED_VARIABLE):
            return 2  # --nproc's launcher prints it once
        raise
