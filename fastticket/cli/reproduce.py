"""fastticket reproduce glue: the paper's Table 1 protocol in one resumable command (see fastticket.reproduce)."""

from __future__ import annotations

import os
import time

from .common import levels_arg, names_arg, run_as_worker, seeds_arg
from .search import ffn_levels_arg
from .training import add_train_options, named_errors, train_overrides

BENCHMARKS = ("glue",)


def add_parser(sub) -> None:
    from ..reproduce import GLUE_TABLE1, PAPER_SEEDS
    from ..tickets.trials import PAPER_LEVELS

    p = sub.add_parser("reproduce", help="the paper's Table 1 protocol: 8 GLUE tasks x 8 levels x 5 seeds, then Table 1")
    p.add_argument("benchmark", choices=BENCHMARKS)
    p.add_argument("--model", required=True, help="the pre-trained checkpoint (BERT-base for the paper's numbers)")
    p.add_argument("--data-dir", required=True, help="GLUE root in the GLUE layout (RTE/, MRPC/, CoLA/, SST-2/, ...)")
    p.add_argument("--out", default=None, help="run directory (default: runs/reproduce-glue-<time>); one search per task inside")
    p.add_argument("--resume", action="store_true", help="continue the reproduction in --out: only what is missing runs")
    p.add_argument("--tasks", type=names_arg, default=",".join(GLUE_TABLE1), help="a subset of the 8 tasks")
    p.add_argument("--seeds", type=seeds_arg, default=",".join(map(str, PAPER_SEEDS)))
    p.add_argument("--levels", type=levels_arg, default=",".join(map(str, PAPER_LEVELS)))
    p.add_argument("--ffn-levels", type=ffn_levels_arg, default="authors",
                   help="FFN pairing: 'authors' (k FFNs at level k/10, the authors' BERT-base scripts; the default), "
                        "'levels' (the same fraction as the heads) or fractions, one per level")
    p.add_argument("--paper-model", default=None, choices=("base", "large"),
                   help="whose published numbers to print beside ours (default: large for a 24-layer model, else base)")
    add_train_options(p, None)
    p.add_argument("--nproc", type=int, default=None,
                   help="worker processes on this machine sharing every task's trials (under torchrun: leave it out)")
    p.add_argument("--device", default=None)
    p.add_argument("--backend", default="auto")
    p.epilog = ("Training: every task runs TrainConfig.paper(task) (lr 5e-5, batch 32, 6 epochs, 3 for MNLI/QNLI, "
                "the task's dropout) with max length 512; the options above override it for every task.")
    p.set_defaults(run=run)


def run(args) -> int:
    return run_as_worker("reproduce", run_reproduce, args)


def run_reproduce(args) -> int:
    from ..distributed import in_torchrun
    from ..reproduce import GluePlan, format_table1, reproduce_glue
    from ..rundir import check_target
    from ..utils import resolve_device

    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the reproduction directory to continue")
    if in_torchrun() and not args.out:
        raise ValueError("under torchrun --out is needed: the reproduction directory every worker shares")
    if not os.path.isdir(args.data_dir):
        raise ValueError(f"--data-dir {args.data_dir!r} is not a directory; allowed: a GLUE root (RTE/, MRPC/, ...)")
    overrides = {"max_length": 512, **train_overrides(args)}
    plan = named_errors(GluePlan, args.model, args.data_dir, tasks=tuple(args.tasks), seeds=args.seeds,
                        levels=args.levels, ffn_levels=args.ffn_levels, overrides=overrides, device=args.device,
                        backend=args.backend)
    out = args.out or os.path.join("runs", f"reproduce-glue-{time.strftime('%Y%m%d-%H%M%S')}")
    check_target(out, "reproduce", resume=args.resume)
    resolve_device(args.device)
    table = reproduce_glue(plan, out, resume=args.resume, paper=args.paper_model, workers=args.nproc)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # worker 0 reports
    print()
    print(format_table1(table, plan.tasks))
    print(f"\nwrote {out}/table1.md, {out}/table1.json and one search run per task ({', '.join(plan.tasks)})")
    return 0
