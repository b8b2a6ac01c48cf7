"""fastticket latency: the measured speed-up of a run's super ticket (or of every level) or of an exported
compact model over the full model, next to the FLOP-ideal one; writes a latency.json report."""

from __future__ import annotations

import os

from ..models.exporting import CONFIG_FILE
from .common import read_run


def add_parser(sub) -> None:
    from ..latency import ENGINES

    p = sub.add_parser("latency", help="time a super ticket (RUN_DIR) or a compact export (MODEL_DIR) against the full "
                                       "model: measured vs FLOP-ideal speed-up")
    p.add_argument("target", metavar="RUN_DIR|MODEL_DIR")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=None, help="tokens per example (default: 128, or the model's maximum)")
    p.add_argument("--engine", default="torch", choices=ENGINES,
                   help="torch: fastticket's encoder; compile: torch.compile of the plain-torch model; onnxruntime: its ONNX export")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards of each model, interleaved (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards of each model first (default 3)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--all-levels", action="store_true", help="every winning level of RUN_DIR, not only its super ticket")
    p.add_argument("--out", default=None, help="report file (default: RUN_DIR/latency.json, MODEL_DIR-latency.json)")
    p.set_defaults(run=run)


def is_run_dir(path: str) -> bool:
    """A search run: its results files, or its marker (a run still in progress is named as such by read_run)."""
    from ..rundir import owner

    return all(os.path.isfile(os.path.join(path, f)) for f in ("config.json", "results.json")) or owner(path) == "search"


def run(args) -> int:
    from .. import latency
    from ..models import load_pruned
    from ..tickets.search import SUPER_MODEL_DIR

    target = args.target.rstrip("/") or args.target
    if not os.path.isdir(target):
        raise ValueError(f"{args.target!r} is not a directory; allowed: a search run directory or an exported model")
    run_dir = is_run_dir(target)
    if not run_dir and not any(os.path.isfile(os.path.join(target, f)) for f in (CONFIG_FILE, "config.json")):
        raise ValueError(f"{args.target!r} is neither a search run (config.json and results.json) nor a model directory "
                         f"({CONFIG_FILE} or config.json); allowed: a search run directory or an exported model")
    if args.all_levels and not run_dir:
        raise ValueError(f"--all-levels needs a search run directory; {args.target!r} is not one")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out ''; allowed: a report file path (or no --out)")
    # beside MODEL_DIR, named from its absolute path: "." would put a hidden ".-latency.json" inside it
    out = args.out or (os.path.join(target, latency.REPORT_FILE) if run_dir
                       else f"{os.path.abspath(target)}-{latency.REPORT_FILE}")
    latency.check_report_path(out)
    latency.check_settings(args.batch_size, args.engine, args.repeats, args.device, args.warmup)  # before loading
    rows = read_run(target)[1] if run_dir else None
    source = os.path.join(target, SUPER_MODEL_DIR) if run_dir else target
    if run_dir and not os.path.isdir(source):
        raise ValueError(f"{args.target!r} has no {SUPER_MODEL_DIR}/ yet: no winning ticket has finished training")
    ticket = load_pruned(source)
    full = latency.full_model_of(ticket.config)
    seq_len = min(128, full.config.max_length) if args.seq_len is None else args.seq_len
    latency.check_options(full.config, args.batch_size, seq_len, args.engine, args.repeats, args.device, args.warmup)
    if args.all_levels:
        tickets = latency.level_tickets(rows, full)
    else:
        label = "super ticket" if run_dir else os.path.basename(os.path.abspath(target))
        tickets = [({"label": label}, ticket)]
    report = latency.measure(full, tickets, engine=args.engine, batch_size=args.batch_size, seq_len=seq_len,
                             repeats=args.repeats, warmup=args.warmup, device=args.device)
    report["source"] = os.path.abspath(target)
    latency.write_report(out, report)
    print(latency.format_report(report))
    print(f"\nwrote {out}")
    return 0
