"""fastticket bench: run the benchmark suite (or named parts) of a source checkout, print the P1–P5 report."""

from __future__ import annotations

import os
import sys

BENCH_PARTS = ("attention", "residual_layernorm", "head_projection", "importance", "rewind", "search", "sharing")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run bench/ (pytest-benchmark, results in bench/results) and print the P1-P5 report")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help=f"benchmarks to run (default: all): {', '.join(BENCH_PARTS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round, nothing recorded (FASTTICKET_BENCH_SMOKE=1)")
    p.add_argument("--report-only", action="store_true", help="print the report of the recorded results, run nothing")
    p.add_argument("--results", default=None, help="results directory (default: bench/results)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    p.set_defaults(run=run)


def run(args) -> int:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bench = root / "bench"
    unknown = [p for p in args.parts if p not in BENCH_PARTS]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(map(repr, unknown))}; allowed: {', '.join(BENCH_PARTS)}")
    if not (bench / "report.py").exists():
        raise ValueError(f"no benchmark suite at {bench}: `fastticket bench` runs from a source checkout")
    env = dict(os.environ)
    if args.results:
        env["FASTTICKET_BENCH_RESULTS"] = os.path.abspath(args.results)
    if args.smoke:
        env["FASTTICKET_BENCH_SMOKE"] = "1"
    if not args.report_only:
        files = [str(bench / f"bench_{p}.py") for p in (args.parts or BENCH_PARTS)]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *files]
        if args.smoke:
            cmd.insert(-len(files), "--benchmark-disable")
        code = subprocess.call(cmd, cwd=root, env=env)
        if code != 0:
            print(f"fastticket bench: pytest exited with {code}", file=sys.stderr)
            return code
        if args.smoke:
            return 0
    report = [sys.executable, "-m", "bench.report"] + (["--results", env["FASTTICKET_BENCH_RESULTS"]] if args.results else [])
    return subprocess.call(report + (["--no-plots"] if args.no_plots else []), cwd=root, env=env)


