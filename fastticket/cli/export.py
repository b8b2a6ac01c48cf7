"""fastticket export: write a run's super-ticket model as a compact, Hugging Face (full or hf-compact) or ONNX export."""

from __future__ import annotations

import os

from ..models.exporting import FORMATS
from .common import read_run


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write RUN_DIR's super-ticket model as a compact, Hugging Face (full or hf-compact) or ONNX export")
    p.add_argument("run_dir")
    p.add_argument("--format", default="hf", choices=FORMATS)
    p.add_argument("--out", default=None, help="target directory: new, empty, or an earlier export, which is replaced "
                                               "atomically (default: RUN_DIR/export-<format>)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..models import export, load_pruned
    from ..rundir import check_replaceable
    from ..tickets.search import SUPER_MODEL_DIR

    read_run(args.run_dir)
    source = os.path.join(args.run_dir, SUPER_MODEL_DIR)
    if not os.path.isdir(source):
        raise ValueError(f"{args.run_dir!r} has no {SUPER_MODEL_DIR}/ yet: no winning ticket has finished training")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out ''; allowed: a new or empty directory, or an earlier export (or no --out)")
    out = args.out or os.path.join(args.run_dir, f"export-{args.format}")
    check_not_in_run(out, args.run_dir)
    check_replaceable(out, "export")  # before loading: the user's files, a run, a checkpoint are refused
    if args.format == "onnx":  # a missing extra, before loading anything
        from ..models.onnx_export import require_onnx

        require_onnx()
    export(load_pruned(source), out, format=args.format)
    print(f"wrote {out} ({args.format})")
    return 0


def check_not_in_run(out: str, run_dir: str) -> None:
    """Refuses an --out at or under what the search keeps and replaces itself: super_ticket_model/ and the
    trials' kept models (exports too, so check_replaceable alone would let this export replace them)."""
    from ..tickets.search import SUPER_MODEL_DIR
    from ..tickets.store import TRIALS_DIR

    real = os.path.realpath(out)
    for kept in (SUPER_MODEL_DIR, TRIALS_DIR):
        own = os.path.realpath(os.path.join(run_dir, kept))
        if real == own or real.startswith(own + os.sep):
            where = "the run's own" if real == own else "inside the run's own"
            raise ValueError(f"--out {out!r} is {where} {kept}/ (the search keeps and replaces what is there); "
                             "allowed: a new or empty directory elsewhere, or an earlier export")
