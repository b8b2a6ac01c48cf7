"""fastticket search: the whole super-ticket search; with no arguments the embedded default (MiniLM +
rotten_tomatoes, offline, about 10 minutes on 2 CPU cores).

Many workers: `fastticket search --nproc N ...` checks the arguments and the output directory, claims and
locks it, then runs N workers (`python -m fastticket search ...`, the same arguments) under torch elastic's
agent and reports a failure in one line; under `torchrun ... -m fastticket search ...` each process is one
worker. Worker 0 prints the results.
"""

from __future__ import annotations

import os
import sys

from ..defaults import DEFAULT_TASK
from ..tickets import ESTIMATORS, KINDS
from .common import (LAUNCHED_VARIABLE, add_local_task_options, format_ticket, levels_arg, local_task_options, names_arg,
                     run_as_worker, seeds_arg)
from .training import add_train_options, train_config


def default_preset(task: str) -> str:
    """The embedded default task runs the quick budget (TrainConfig.quick); every other task the paper's."""
    return "quick" if task == DEFAULT_TASK else "paper"


def ffn_levels_arg(text: str):
    """--ffn-levels: 'levels' (the default pairing), 'authors', or comma-separated fractions."""
    import argparse

    if text in ("levels", "authors"):
        return text
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ffn-levels {text!r}: expected 'levels', 'authors' or comma-separated "
                                         f"fractions of FFNs pruned, e.g. 0.1,0.2") from None


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="fine-tune, score, prune at 8 levels, rewind, re-train, pick the super tickets")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--task", default=None, help=f"task name (default: the embedded {DEFAULT_TASK}); GLUE names, snli, scitail, local")
    p.add_argument("--data-dir", default=None, help="local GLUE-layout directory (or the folder of a local task)")
    add_local_task_options(p)
    p.add_argument("--levels", type=levels_arg, default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", help="fractions of heads pruned")
    p.add_argument("--ffn-levels", type=ffn_levels_arg, default=None,
                   help="fractions of FFNs pruned, one per level (default: the levels); 'authors': k FFNs at level k/10 "
                        "(the authors' BERT-base scripts)")
    p.add_argument("--granularity", default="ffn", choices=("ffn", "neuron"),
                   help="ffn: prune whole FFNs (the paper's); neuron: prune FFN neurons at the FFN level instead")
    p.add_argument("--neuron-multiple", type=int, default=None,
                   help="with --granularity neuron: each FFN keeps a multiple of this many neurons (default 64)")
    p.add_argument("--kinds", type=names_arg, default="winning", help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--seeds", type=seeds_arg, default="0")
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    add_train_options(p, f"quick for the embedded {DEFAULT_TASK}, paper otherwise")
    p.add_argument("--importance-examples", type=int, default=None, help="training examples scored (default all)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default="auto", help="fused-op backend: auto, torch, cpp, triton, cuda")
    p.add_argument("--out", default=None, help="run directory (default: runs/<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, running only what is missing")
    p.add_argument("--latency", action="store_true", help="time every winning level against the full model after the "
                                                          "search: measured and FLOP-ideal speed-up columns, latency.json")
    p.add_argument("--nproc", type=int, default=None,
                   help="worker processes on this machine, one torch.distributed job (under torchrun: leave it out)")
    p.set_defaults(run=run)


def run(args) -> int:
    return run_as_worker("search", run_search, args)


def run_search(args) -> int:
    import time as _time

    from ..distributed import check_nproc, in_torchrun
    from ..rundir import check_target
    from ..tickets import search
    from ..tickets.search import check_arguments
    from ..utils import resolve_device

    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the run directory to continue")
    worker = in_torchrun()
    if args.nproc is not None:
        check_nproc(args.nproc)
        if worker and not os.environ.get(LAUNCHED_VARIABLE):
            raise ValueError(f"--nproc {args.nproc} inside a torchrun job; allowed: torchrun's --nproc-per-node "
                             f"(and --nnodes), or --nproc without torchrun")
    if worker and not args.out:
        raise ValueError("under torchrun --out is needed: the run directory every worker shares")
    task = args.task or DEFAULT_TASK
    local = local_task_options(args, task)
    check_option_pairs(args)
    config = train_config(args, default_preset(task))
    out = args.out or os.path.join("runs", f"{task}-{_time.strftime('%Y%m%d-%H%M%S')}")
    check_target(out, "search", resume=args.resume)  # before loading anything (search checks again, then claims)
    resolve_device(args.device)
    # what needs no model or data, before a --task local is read and tokenized or workers start
    check_arguments(args.levels, args.kinds, args.seeds, ffn_levels=args.ffn_levels, estimator=args.estimator,
                    importance_examples=args.importance_examples, backend=args.backend,
                    granularity=args.granularity, neuron_multiple=args.neuron_multiple)
    if not worker and (args.nproc or 1) > 1:
        return launch_workers(args, out)
    model = args.model
    if model is None:
        from ..defaults import default_model_path

        model = default_model_path()
    if task == "local":  # the CLI reads the files (with their column options); search records data_dir
        from ..data.task import load_task

        task = load_task("local", tokenizer=model, max_length=config.max_length, data_dir=args.data_dir, **local)
    result = search(
        model, task, levels=args.levels, kinds=args.kinds, seeds=args.seeds, out_dir=out, config=config,
        ffn_levels=args.ffn_levels, estimator=args.estimator, data_dir=args.data_dir,
        importance_examples=args.importance_examples, device=args.device, backend=args.backend, resume=args.resume,
        granularity=args.granularity, neuron_multiple=args.neuron_multiple,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # worker 0 reports
    report(result, task, model, out, args)
    return 0


def check_option_pairs(args) -> None:
    """Options that only mean something beside another are refused without it (never ignored silently);
    --neuron-multiple's default (64) is set here, where it applies."""
    if args.neuron_multiple is not None and args.granularity != "neuron":
        raise ValueError(f"--neuron-multiple {args.neuron_multiple} is for --granularity neuron (the granularity is "
                         f"{args.granularity!r}: whole FFNs are pruned)")
    args.neuron_multiple = 64 if args.neuron_multiple is None else args.neuron_multiple
    if args.latency and "winning" not in args.kinds:
        raise ValueError(f"--latency times the winning tickets, and --kinds {','.join(args.kinds)!r} has none; "
                         f"allowed: --kinds with winning, or no --latency")


def report(result, task, model, out: str, args) -> None:
    """The run's summary: data sizes, the table (or its latency columns), the super ticket, what was written."""
    from ..defaults import display_name

    name = task if isinstance(task, str) else task.name
    print(f"\n{display_name(model)} on {name}: {result.config['train_examples']} training, "
          f"{result.config['selection_examples']} selection and {result.config['heldout_examples']} held-out examples")
    if args.latency:  # fastticket latency's defaults (torch engine, batch 32 x 128 tokens or the model's maximum)
        from ..latency import search_latency

        print(search_latency(result, model, device=args.device))
    else:
        print(result.table())
    if result.super_row is not None:
        r = result.super_row
        print(f"\nsuper ticket: level {r['level']:.2f}, FFN level {r['ffn_level']:.2f} (seed {r['seed']}; exported: the level "
              f"most seeds picked), selection {result.config['metric']} {r['selection_score']:.4f}, held-out "
              f"{r['heldout_score']:.4f}, {r['weights_remaining']:.1f}% of weights ({r['encoder_weights_remaining']:.1f}% of the encoder's)")
        print(format_ticket(result.super_ticket))
    else:
        print("\nno super ticket: no winning ticket was searched (--kinds has no 'winning')")
    written = [f for f in OUTPUTS if os.path.exists(os.path.join(out, f.rstrip("/")))]
    print(f"\nwrote {out}/: {', '.join(written)}")


def launch_workers(args, out: str) -> int:
    """--nproc N: claims and locks `out`, runs N workers with the same arguments (and this --out), joining the
    lock; a failed job is one line naming the worker and its error (2 for bad input, else 1)."""
    from ..distributed import JobFailed, launch
    from ..tickets.sweep import LOCK_TOKEN_VARIABLE, held_for_workers

    with held_for_workers(out, args.resume) as token:
        try:
            return launch(args.nproc, [*args.argv, "--out", out], env={LOCK_TOKEN_VARIABLE: token, LAUNCHED_VARIABLE: "1"})
        except JobFailed as exc:
            print(f"fastticket search: error: {exc}", file=sys.stderr)
            return 2 if exc.user_error else 1


OUTPUTS = ("config.json", "results.json", "super_ticket.json", "phase_transition.png", "super_ticket_model/")
