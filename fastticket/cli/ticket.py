"""fastticket ticket: score every head and FFN, cut one ticket and print it."""

from __future__ import annotations

import os
import time

from ..data import EMBEDDED_TASKS
from ..defaults import DEFAULT_TASK
from ..tickets import ESTIMATORS, KINDS
from .common import format_scores, format_ticket

def add_parser(sub) -> None:
    p = sub.add_parser("ticket", help="importance + select on a model and task; prints the ticket")
    p.add_argument("--model", default=None, help="HF checkpoint dir or hub name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--task", default=DEFAULT_TASK, choices=sorted(EMBEDDED_TASKS))
    p.add_argument("--estimator", default="paper", choices=ESTIMATORS)
    p.add_argument("--sparsity", type=float, default=0.3, help="fraction of heads and FFNs pruned, in (0, 1)")
    p.add_argument("--kind", default="winning", choices=KINDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=1024, help="training examples scored (0 = all)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="directory for importance.json and ticket.json")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from .. import importance, load_model, load_task, select
    from ..data.batching import seeded_subset
    from ..defaults import default_model_path
    from ..tickets.select import check_level

    check_level(args.sparsity, args.kind)
    if args.max_examples < 0:
        raise ValueError(f"--max-examples={args.max_examples}; allowed: 0 (all) or a positive count")
    torch.manual_seed(args.seed)
    source = args.model or default_model_path()
    model = load_model(source, num_labels=2, seed=args.seed).to(args.device)
    task = load_task(args.task, tokenizer=source, max_length=args.max_length)
    data = task.train
    if args.max_examples:
        data = seeded_subset(data, args.max_examples, seed=args.seed)
    start = time.perf_counter()
    scores = importance(model, data, estimator=args.estimator, batch_size=args.batch_size, backend=args.backend)
    seconds = time.perf_counter() - start
    ticket = select(scores, args.sparsity, kind=args.kind, seed=args.seed)
    name = args.model or "all-MiniLM-L6-v2 (embedded)"
    print(f"\n{name} on {task.name}: {scores.num_examples} examples, "
          f"estimator {scores.estimator}, {seconds:.1f} s")
    print(format_scores(scores))
    print(f"\n{args.kind} ticket at sparsity {args.sparsity}:")
    print(format_ticket(ticket))
    if args.out:
        scores.save(os.path.join(args.out, "importance.json"))
        ticket.save(os.path.join(args.out, "ticket.json"))
        print(f"\nwrote {args.out}/importance.json and {args.out}/ticket.json")
    return 0


