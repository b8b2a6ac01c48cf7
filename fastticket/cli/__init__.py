"""The `fastticket` command: one module per subcommand, each with add_parser(sub) and run(args).

    fastticket search   the whole super-ticket search; with no arguments the embedded default (MiniLM +
                        rotten_tomatoes, offline, about 10 minutes on 2 CPU cores)
    fastticket plot     redraw a run's phase_transition.png
    fastticket export   write a run's super-ticket model as a compact, Hugging Face or ONNX export
    fastticket latency  time a super ticket (or every level) against the full model: measured vs FLOP-ideal
    fastticket ticket   score every head and FFN, cut one ticket and print it
    fastticket share    ticket sharing (multi-task)
    fastticket adapt    few-shot domain adaptation of a super ticket or shared model
    fastticket reproduce glue   the paper's Table 1 protocol (8 GLUE tasks x 8 levels x 5 seeds) and Table 1
    fastticket bench    run the benchmark suite (or named parts) of a source checkout, print the P1–P5 report
"""

from __future__ import annotations

import argparse
import sys
import warnings

from . import adapt, bench, export, latency, plot, reproduce, search, share, ticket
from .bench import BENCH_PARTS
from .common import format_scores, format_ticket

COMMANDS = (search, plot, export, latency, ticket, share, adapt, reproduce, bench)

__all__ = ["main", "BENCH_PARTS", "format_scores", "format_ticket"]


def main(argv: list[str] | None = None) -> int:
    """Runs a command. Bad input is one line on stderr and exit status 2 (ValueError, raised before any work);
    an OS error (disk full, a file vanished) one line and status 1; an interrupt status 130. Warnings print
    as one line each."""
    parser = argparse.ArgumentParser(prog="fastticket", description="Super tickets in pre-trained encoders, fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher passes on to its workers
    prefix = f"fastticket {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(f"{prefix}: warning: {message}", file=sys.stderr)
        try:
            return args.run(args)
        except ValueError as exc:
            print(f"{prefix}: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc) else ""
            print(f"{prefix}: error: {exc}{where}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
