"""fastticket search: the whole super-ticket search; with no arguments the embedded default (MiniLM +
rotten_tomatoes, offline, about 10 minutes on 2 CPU cores)."""

from __future__ import annotations

import os

from ..defaults import DEFAULT_TASK
from ..tickets import ESTIMATORS, KINDS
from .common import add_local_task_options, format_ticket, levels_arg, local_task_options, names_arg, seeds_arg


# The embedded default's budget (options not given on the command line): about 10 minutes on 2 CPU cores.
# all-MiniLM was trained with mean pooling, so its [CLS] classifier needs the paper's largest lr (2e-4) to
# learn in one short epoch.
QUICK_DEFAULTS = dict(epochs=1, lr=2e-4, batch_size=16, max_train_examples=2500, max_eval_examples=1000, max_length=64)
PAPER_DEFAULTS = dict(epochs=6, lr=5e-5, batch_size=32, max_train_examples=None, max_eval_examples=None, max_length=128)

def add_parser(sub) -> None:
    p = sub.add_parser("search", help="fine-tune, score, prune at 8 levels, rewind, re-train, pick the super ticket")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--task", default=None, help=f"task name (default: the embedded {DEFAULT_TASK}); GLUE names, snli, scitail, local")
    p.add_argument("--data-dir", default=None, help="local GLUE-layout directory (or the folder of a local task)")
    add_local_task_options(p)
    p.add_argument("--levels", type=levels_arg, default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", help="fractions pruned")
    p.add_argument("--kinds", type=names_arg, default="winning", help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--seeds", type=seeds_arg, default="0")
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    p.add_argument("--epochs", type=int, default=None, help=f"default 6 (the paper's); 1 for {DEFAULT_TASK}")
    p.add_argument("--lr", type=float, default=None, help="default 5e-5; 2e-4 for the embedded default")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; 16 for the embedded default")
    p.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs (0 = none)")
    p.add_argument("--max-length", type=int, default=None, help="default 128; 64 for the embedded default")
    p.add_argument("--importance-examples", type=int, default=None, help="training examples scored (default all)")
    p.add_argument("--max-train-examples", type=int, default=None, help="default all; 2500 for the embedded default")
    p.add_argument("--max-eval-examples", type=int, default=None, help="default all; 1000 for the embedded default")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default="auto", help="fused-op backend: auto, torch, cpp, triton, cuda")
    p.add_argument("--out", default=None, help="run directory (default: runs/<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, running only what is missing")
    p.set_defaults(run=run)


def run(args) -> int:
    import time as _time

    from ..defaults import display_name
    from ..rundir import check_target
    from ..tickets import search
    from ..utils import resolve_device

    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the run directory to continue")
    task = args.task or DEFAULT_TASK
    local = local_task_options(args, task)
    budget = QUICK_DEFAULTS if task == DEFAULT_TASK else PAPER_DEFAULTS
    options = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in budget.items()}
    out = args.out or os.path.join("runs", f"{task}-{_time.strftime('%Y%m%d-%H%M%S')}")
    check_target(out, "search", resume=args.resume)  # before loading anything (search checks again, then claims)
    resolve_device(args.device)
    model = args.model
    if model is None:
        from ..defaults import default_model_path

        model = default_model_path()
    if task == "local":  # the CLI reads the files (with their column options); search records data_dir
        from ..data.task import load_task

        task = load_task("local", tokenizer=model, max_length=options["max_length"], data_dir=args.data_dir, **local)
    result = search(
        model, task, levels=args.levels, kinds=args.kinds, seeds=args.seeds, out_dir=out, estimator=args.estimator,
        patience=args.patience or None, data_dir=args.data_dir, importance_examples=args.importance_examples,
        device=args.device, backend=args.backend, resume=args.resume, **options,
    )
    name = task if isinstance(task, str) else task.name
    print(f"\n{display_name(model)} on {name}: {result.config['train_examples']} training, "
          f"{result.config['selection_examples']} selection and {result.config['heldout_examples']} held-out examples")
    print(result.table())
    if result.super_row is not None:
        r = result.super_row
        print(f"\nsuper ticket: level {r['level']:.2f} (seed {r['seed']}), selection {result.config['metric']} "
              f"{r['selection_score']:.4f}, held-out {r['heldout_score']:.4f}, {r['weights_remaining']:.1f}% of encoder weights")
        print(format_ticket(result.super_ticket))
    else:
        print("\nno super ticket: no winning ticket was searched (--kinds has no 'winning')")
    written = [f for f in OUTPUTS if os.path.exists(os.path.join(out, f.rstrip("/")))]
    print(f"\nwrote {out}/: {', '.join(written)}")
    return 0


OUTPUTS = ("config.json", "results.json", "super_ticket.json", "phase_transition.png", "super_ticket_model/")
