"""fastticket share: ticket sharing, multi-task training with each task on its own ticket."""

from __future__ import annotations

import os
import time

from .common import names_arg
from .training import add_train_options, subset_task, train_config

def add_parser(sub) -> None:
    p = sub.add_parser("share", help="ticket sharing: multi-task training, each task on its own ticket of a shared encoder")
    p.add_argument("--tasks", type=names_arg, default="rotten_tomatoes,bbc_news", help="comma-separated task names")
    p.add_argument("--tickets-from", default=None,
                   help="comma-separated run dirs holding the tickets: `fastticket search` runs (config.json task + "
                        "super_ticket.json), a share run (tickets/<task>.json) or a dir of <task>.json / <task>/super_ticket.json")
    p.add_argument("--sparsity", type=float, default=None,
                   help="without --tickets-from: fine-tune the model on each task, score importance and cut a winning "
                        "ticket per task at this level (as `fastticket ticket` does)")
    p.add_argument("--importance-examples", type=int, default=None,
                   help="examples scored per task for --sparsity (default 256)")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="GLUE-layout root for GLUE tasks")
    add_train_options(p, "quick-share (per task; paper-mtl is the paper's A.2.1)")
    p.add_argument("--compat", default=None, choices=("mtdnn",), help="the authors' masking by multiplication + dense Adamax")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", default=None, help="run directory (default: runs/share-<time>)")
    p.set_defaults(run=run)


def _read_tickets(sources: str, names, model) -> dict:
    """{task: Ticket} of the --tickets-from sources; a source giving none of the tasks a ticket, two sources
    giving one task a ticket, or a search run of another model is one ValueError (never a silent pick)."""
    found, origin = {}, {}
    for src in [s for s in sources.split(",") if s.strip()]:
        tickets = _tickets_in(src, names, model)
        if not tickets:
            raise ValueError(f"--tickets-from {src!r} holds no ticket for the tasks {', '.join(names)} ({_holds(src)}); "
                             f"allowed: search runs of these tasks, a share run or a dir of <task>.json")
        for name, ticket in tickets.items():
            if name in found:
                raise ValueError(f"--tickets-from gives task {name!r} two tickets ({origin[name]!r} and {src!r}); "
                                 f"allowed: one source per task")
            found[name], origin[name] = ticket, src
    return found  # share_tickets names a task without a ticket


def _tickets_in(src: str, names, model) -> dict:
    """{task: Ticket} of one source: a search run's super ticket (checked against `model`), then per task
    tickets/<task>.json, <task>.json or <task>/super_ticket.json (a reproduction's search runs: checked too)."""
    from ..tickets import Ticket

    own = _search_ticket(src, model)
    found = {own[0]: own[1]} if own else {}
    for name in [n for n in names if n not in found]:
        files = [os.path.join(src, "tickets", f"{name}.json"), os.path.join(src, f"{name}.json")]
        file = next((f for f in files if os.path.isfile(f)), None)
        run = None if file else _search_ticket(os.path.join(src, name), model)
        if file is not None:
            found[name] = Ticket.load(file)
        elif run is not None:
            if run[0] != name:
                raise ValueError(f"--tickets-from {os.path.join(src, name)!r} is a search run of task {run[0]!r}, not "
                                 f"{name!r}; allowed: <task>/ folders holding that task's search")
            found[name] = run[1]
        elif os.path.isfile(os.path.join(src, name, "super_ticket.json")):
            found[name] = Ticket.load(os.path.join(src, name, "super_ticket.json"))
    return {n: found[n] for n in names if n in found}


def _search_ticket(run_dir: str, model):
    """(task, super ticket) of a search run directory, its model checked against `model` first; None when
    run_dir is not a search run with a super ticket."""
    from ..tickets import Ticket
    from ..tickets.store import read_json

    config, ticket = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "super_ticket.json")
    if not (os.path.isfile(ticket) and os.path.isfile(config)):
        return None
    recorded = read_json(config, "run configuration")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("task"), str):
        return None
    _check_same_model(run_dir, recorded, model)
    return recorded["task"], Ticket.load(ticket)


def _holds(src: str) -> str:
    """What a source without a wanted ticket is, for the error message."""
    from ..tickets.store import read_json

    config = os.path.join(src, "config.json")
    recorded = read_json(config, "run configuration") if os.path.isfile(config) else None
    if isinstance(recorded, dict) and isinstance(recorded.get("task"), str):
        return f"it is a search run of task {recorded['task']!r}"
    return "no super_ticket.json, tickets/<task>.json, <task>.json or <task>/super_ticket.json there"


# what a search run's model configuration may differ in from the shared model's and still be the same encoder
_HEAD_FIELDS = ("num_labels", "kept_heads", "kept_ffn", "kept_neurons")


def _check_same_model(src: str, recorded: dict, model) -> None:
    """A search run's ticket ranks the heads and FFNs of the model it searched: another architecture or
    vocabulary of the same shape would take it silently."""
    import json

    identity = recorded.get("model")
    theirs = identity.get("config") if isinstance(identity, dict) else None
    if not isinstance(theirs, dict):
        return  # an older run without a model record: nothing to compare
    ours = json.loads(json.dumps({k: v for k, v in model.config.to_dict().items() if k != "hf_config"}, default=str))
    # keys both record (a run of another fastticket version may lack or add a field without being another model)
    differ = sorted(k for k in set(theirs) & set(ours) if k not in _HEAD_FIELDS and theirs[k] != ours[k])
    if differ:
        what = ", ".join(f"{k}: {theirs[k]!r} -> {ours[k]!r}" for k in differ[:4])
        raise ValueError(f"--tickets-from {src!r} is a search run of another model ({recorded.get('model_name')!r}; "
                         f"{what}); allowed: runs of --model {model.name_or_path!r}")


def _check_args(args):
    """Everything that can be checked before a model or task is loaded; returns the TrainConfig."""
    from ..data.task import check_task_name
    from ..rundir import check_target
    from ..tickets.select import check_level
    from ..tickets.trials import check_seed
    from ..utils import resolve_device

    if not args.tasks:
        raise ValueError("--tasks is empty; give comma-separated task names, e.g. rotten_tomatoes,bbc_news")
    if len(set(args.tasks)) != len(args.tasks):
        raise ValueError(f"--tasks {','.join(args.tasks)!r} names a task twice; allowed: distinct task names")
    for name in args.tasks:
        check_task_name(name)
    if args.tickets_from is None and args.sparsity is None:
        raise ValueError("give --tickets-from RUN_DIR (super tickets of `fastticket search` runs) or --sparsity S")
    if args.tickets_from is not None:
        sources = [s for s in args.tickets_from.split(",") if s.strip()]
        if not sources:
            raise ValueError(f"--tickets-from {args.tickets_from!r} names no directory; allowed: comma-separated run dirs")
        for src in sources:
            if not os.path.isdir(src):
                raise ValueError(f"--tickets-from {src!r} is not a directory")
        cutting = [f"{flag} {value}" for flag, value in (("--sparsity", args.sparsity),
                                                         ("--importance-examples", args.importance_examples)) if value is not None]
        if cutting:  # they cut tickets; --tickets-from reads them: they would be ignored
            raise ValueError(f"{' and '.join(cutting)} with --tickets-from; allowed: --tickets-from, or --sparsity "
                             f"(with --importance-examples)")
    else:
        check_level(args.sparsity)
    check_seed(args.seed, "--seed")
    config = train_config(args, "quick-share")
    args.importance_examples = 256 if args.importance_examples is None else args.importance_examples
    if args.importance_examples < 1:
        raise ValueError(f"--importance-examples={args.importance_examples}; allowed: a positive count")
    resolve_device(args.device)
    if args.out is not None:
        check_target(args.out, "share")
    return config


def run(args) -> int:
    from .. import load_model, load_task, share_tickets
    from ..defaults import default_model_path
    from ..tickets.search import check_level_prunes

    config = _check_args(args)
    source = args.model or default_model_path()
    model = load_model(source, seed=args.seed, backend=args.backend)
    if config.max_length > model.config.max_length:
        raise ValueError(f"--max-length={config.max_length} exceeds the model's {model.config.max_length} positions")
    if args.tickets_from is not None:  # before tokenizing any task: a wrong source fails in seconds
        tickets = _read_tickets(args.tickets_from, list(args.tasks), model)
    tasks = {n: subset_task(load_task(n, tokenizer=source, max_length=config.max_length, data_dir=args.data_dir), config, args.seed)
             for n in args.tasks}
    if args.tickets_from is None:
        check_level_prunes(model, args.sparsity)
        tickets = _fine_tuned_tickets(model, tasks, config, args)
    out = args.out or os.path.join("runs", f"share-{time.strftime('%Y%m%d-%H%M%S')}")
    result = share_tickets(model, tasks, tickets, config=config, seed=args.seed, compat=args.compat, device=args.device,
                           backend=args.backend, out_dir=out)
    print(f"\nticket sharing over {', '.join(tasks)} ({result.config['steps']} steps, {result.config['seconds']:.0f} s, "
          f"union: {result.config['union']['heads']} heads, {result.config['union']['ffn']} FFNs)")
    print(result.table())
    print(f"\nwrote {out}/: results.json, config.json, tickets/, shared_encoder/, task_heads.safetensors")
    return 0


def _fine_tuned_tickets(model, tasks: dict, config, args) -> dict:
    """--sparsity: per task, the model fine-tuned on it (never an untrained head), scored, cut."""
    from .. import fine_tune, importance, select
    from ..data.batching import seeded_subset
    from ..tickets.adapt import with_task_head

    tickets = {}
    for name, task in tasks.items():
        net = with_task_head(model, task.num_labels, args.seed)
        trial = config if config.dropout is not None else config.replace(dropout=task.dropout)
        fine_tune(net, task.train, task.dev, config=trial, metric=task, seed=args.seed, device=args.device)
        scores = importance(net, seeded_subset(task.train, args.importance_examples, seed=args.seed), backend=args.backend)
        tickets[name] = select(scores, args.sparsity, seed=args.seed)
    return tickets
