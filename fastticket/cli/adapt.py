"""fastticket adapt: fine-tune a super ticket or a shared model on 0.1–100 % of a task (Table 4)."""

from __future__ import annotations

import os
import time

from .common import fractions_arg, seeds_arg
from .training import add_train_options, subset_task, train_config

def add_parser(sub) -> None:
    p = sub.add_parser("adapt", help="domain adaptation: fine-tune a super ticket / shared model on 0.1-100%% of a task")
    p.add_argument("--task", default="bbc_news")
    p.add_argument("--from", dest="source", default=None,
                   help="a `fastticket search` run (its super_ticket_model/), a `fastticket share` run, a compact export "
                        "or a checkpoint dir (default: the embedded pre-trained model)")
    p.add_argument("--shared-task", default=None, help="with a share run: adapt that task's ticket (default: the union)")
    p.add_argument("--fractions", type=fractions_arg("--fractions", "0.001,0.01,0.1,1"), default="0.001,0.01,0.1,1.0")
    p.add_argument("--seeds", type=seeds_arg, default="0")
    p.add_argument("--data-dir", default=None)
    add_train_options(p, "quick-adapt (the paper's A.3.2: paper)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="run directory (default: runs/adapt-<task>-<time>)")
    p.set_defaults(run=run)


def _check_args(args):
    """Everything that can be checked before a model or task is loaded; returns the TrainConfig."""
    from ..data.task import check_task_name
    from ..rundir import check_target
    from ..tickets.trials import check_seed
    from ..utils import resolve_device

    check_task_name(args.task)
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if not args.fractions or bad or len(set(args.fractions)) != len(args.fractions):  # a repeat trains twice
        raise ValueError(f"--fractions {','.join(map(str, args.fractions))!r}; allowed: distinct fractions in (0, 1], e.g. 0.001,0.01,0.1,1")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds {args.seeds}; allowed: distinct integers, at least one")
    for seed in args.seeds:
        check_seed(seed, "--seeds value")
    config = train_config(args, "quick-adapt")
    resolve_device(args.device)
    if args.out is not None:
        check_target(args.out, "adapt")
    return config


def _check_source(source: str) -> None:
    """A search or reproduce run without a model to adapt is named as such (its config.json is no checkpoint's:
    loading it said 'model_type None')."""
    from ..rundir import owner

    if not os.path.isdir(source):
        return
    found = owner(source)
    if found == "search":
        raise ValueError(f"--from {source!r} is a `fastticket search` run without a super ticket (no super_ticket_model/: "
                         f"no winning ticket finished); allowed: a search run with one, a share run, an export or a checkpoint")
    if found in ("reproduce", "adapt"):
        raise ValueError(f"--from {source!r} is a `fastticket {found}` run, not a model; allowed: a search run (of a "
                         f"reproduction: its <task>/ folder), a share run, an export or a checkpoint")


def run(args) -> int:
    from .. import adapt, load_task
    from ..defaults import default_model_path
    from ..tickets.adapt import encoder_of
    from ..tickets.search import SUPER_MODEL_DIR

    config = _check_args(args)
    source = args.source or default_model_path()
    if os.path.isdir(os.path.join(source, SUPER_MODEL_DIR)):
        source = os.path.join(source, SUPER_MODEL_DIR)
    if not os.path.exists(source):
        raise ValueError(f"--from {source!r} does not exist")
    _check_source(source)
    encoder = encoder_of(source, args.shared_task)
    if config.max_length > encoder.config.max_length:
        raise ValueError(f"--max-length={config.max_length} exceeds the model's {encoder.config.max_length} positions")
    task = subset_task(load_task(args.task, tokenizer=encoder.name_or_path or default_model_path(),
                                 max_length=config.max_length, data_dir=args.data_dir), config, args.seeds[0])
    out = args.out or os.path.join("runs", f"adapt-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = adapt(encoder, task, args.fractions, seeds=args.seeds, config=config, device=args.device, out_dir=out)
    print(f"\nadapting {result.config['heads_kept']} heads / {result.config['ffn_kept']} FFNs to {args.task} "
          f"({len(task.train)} training, {len(task.dev)} dev examples)")
    print(result.table())
    print(f"\nwrote {out}/results.json")
    return 0
