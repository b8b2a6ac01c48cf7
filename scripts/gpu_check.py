"""`make gpu-check`: the prepared run for a lent H100/H200 (no network), under 8 minutes in all.

Parts, each in its own try with a hard time budget (a failure or timeout is recorded and the run goes on):
  install   pip install -e . --no-deps --no-build-isolation (the machine's torch, triton, transformers);
            if the CUDA part of fastticket._C fails to build, again with FASTTICKET_BUILD_CUDA=0
  env       device, driver, torch / CUDA / triton / transformers versions, whether fastticket._C has CUDA
  tests     pytest -m gpu tests/ops/test_gpu.py: every op and backend at production shapes, bf16/fp16,
            FlashAttention's error rule, bit-identical repeats
  P2        bench/bench_attention.py, fwd+bwd with dξ vs SDPA flash / cuDNN / varlen + reduction, Flex,
            and the DeBERTa-bias / ModernBERT-window cases
  P1        bench/bench_importance.py (importance pass vs plain fwd+bwd, authors', loop, torch.func vmap)
  P3        bench/bench_rewind.py at levels 1, 4, 8 (torch.compile peers at level 4)
  report    python -m bench.report: the ratio table and plots
The benchmarks run MiniLM, BERT-base and BERT-large shapes in bf16 (random weights where none are
installed) and write their records (device, versions, commit, date) into bench/results/; this run's
summary goes to bench/results/gpu_check.json, and everything is copied to $OUT (or --out) when set. A
short table is printed last.

--smoke runs the same code on CPU at tiny sizes (install skipped, benchmarks in smoke mode under the Triton
interpreter, nothing recorded in bench/results): tests/ops/test_gpu_check.py runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 450  # the whole run, leaving margin under 8 minutes
BUDGETS = {"install": 180, "env": 20, "tests": 80, "P2": 90, "P1": 50, "P3": 60, "report": 20}


@dataclass
class Part:
    name: str
    status: str = "not run"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    note: str = ""
    output: str = field(default="", repr=False)


def run_command(cmd, budget_s, env=None) -> tuple[int | None, str]:
    """(exit status, or None on timeout; the last 4000 characters of stdout + stderr)."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1, budget_s))
        return p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return None, (out.decode(errors="replace") if isinstance(out, bytes) else out)[-4000:]


def run_parts(parts, deadline: float) -> list[Part]:
    """Runs (name, fn(budget_s) -> (status, note, output)) in order, each within min(its budget, what is left
    before `deadline`); an exception or an exhausted deadline is recorded and the next part runs."""
    done = []
    for name, fn in parts:
        part = Part(name)
        left = deadline - time.monotonic()
        budget = min(BUDGETS.get(name, 60), left)
        start = time.monotonic()
        if budget < 5:
            part.status, part.note = "skipped", "no time left in the run's budget"
        else:
            try:
                part.status, part.note, part.output = fn(budget)
            except Exception as exc:  # noqa: BLE001  (one part's failure must not stop the run)
                part.status, part.note = "failed", f"{type(exc).__name__}: {exc}"
        part.seconds = round(time.monotonic() - start, 1)
        done.append(part)
        print(f"[gpu-check] {part.name}: {part.status} ({part.seconds} s) {part.note}", flush=True)
    return done


def _status(rc) -> str:
    return "timeout" if rc is None else "ok" if rc == 0 else "failed"


def install(budget):
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", ".", "--no-deps", "--no-build-isolation"]
    rc, out = run_command(cmd, budget * 0.65)
    if rc == 0:
        return "ok", "with the CUDA part when it could build", out
    rc2, out2 = run_command(cmd, budget * 0.35, env={**os.environ, "FASTTICKET_BUILD_CUDA": "0"})
    note = f"full build {_status(rc)}; retried with FASTTICKET_BUILD_CUDA=0: {_status(rc2)}"
    return ("ok" if rc2 == 0 else _status(rc2)), note, out + "\n--- retry ---\n" + out2


def environment(budget):
    code = ("import json, torch, platform\n"
            "info = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
            "        'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}\n"
            "for mod in ('triton', 'transformers'):\n"
            "    try:\n        info[mod] = __import__(mod).__version__\n"
            "    except ImportError:\n        info[mod] = None\n"
            "try:\n    import fastticket._C as C; info['fastticket._C'] = 'cuda' if C.with_cuda else 'cpu only'\n"
            "except ImportError as e:\n    info['fastticket._C'] = f'not built ({e})'\n"
            "import fastticket.ops as o; info['attention backends'] = list(o.available('masked_attention'))\n"
            "print(json.dumps(info))\n")
    rc, out = run_command([sys.executable, "-c", code], budget)
    line = next((l for l in reversed(out.splitlines()) if l.startswith("{")), "")
    return _status(rc), line, out


def pytest_part(paths, extra, env):
    def run(budget):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning", *extra, *paths]
        rc, out = run_command(cmd, budget, env)
        summary = next((l for l in reversed(out.splitlines()) if " passed" in l or " failed" in l or " skipped" in l
                        or "no tests ran" in l or " error" in l), "")
        # pytest exit 5 = nothing collected/selected: not a failure of this run
        return ("ok" if rc in (0, 5) else _status(rc)), summary.strip("= "), out
    return run


def report(env, smoke: bool):
    """The ratio table (and plots) of bench/results; a smoke run reads them and writes nothing."""
    def run(budget):
        cmd = [sys.executable, "-m", "bench.report", "--results", str(ROOT / "bench" / "results")]
        rc, out = run_command(cmd + (["--no-plots"] if smoke else []), budget, env)
        rows = [l for l in out.splitlines() if l.startswith("|") and (" yes " in l or " no " in l)]
        return _status(rc), f"{len(rows)} goal rows", out
    return run


def parts(smoke: bool, results: Path):
    env = {**os.environ, "FASTTICKET_BENCH_RESULTS": str(results), "PYTHONUNBUFFERED": "1"}
    bench = ["--benchmark-disable"] if _has_pytest_benchmark() else []
    if smoke:
        env.update(FASTTICKET_BENCH_SMOKE="1", TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    else:
        env.update(FASTTICKET_BENCH_MODES="fwd_bwd", FASTTICKET_BENCH_ROUNDS="10", FASTTICKET_BENCH_LEVELS="1,4,8")
    steps = [("install", (lambda b: ("skipped", "smoke run: nothing installed", "")) if smoke else install),
             ("env", environment),
             ("tests", pytest_part(["tests/ops/test_gpu.py"], ["-m", "gpu"], env)),
             ("P2", pytest_part(["bench/bench_attention.py"], bench, env)),
             ("P1", pytest_part(["bench/bench_importance.py"], bench, env)),
             ("P3", pytest_part(["bench/bench_rewind.py"], bench, env)),
             ("report", report(env, smoke))]
    return steps


def _has_pytest_benchmark() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytest_benchmark") is not None


def table(done: list[Part]) -> str:
    rows = [f"{'part':<8} {'status':<8} {'seconds':>8}  note"]
    rows += [f"{p.name:<8} {p.status:<8} {p.seconds:>8.1f}  {p.note[:110]}" for p in done]
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, nothing installed or recorded")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="also copy the records here (default: $OUT)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    results = (Path(args.out) / "smoke-results") if args.smoke and args.out else ROOT / "bench" / "results"
    done = run_parts(parts(args.smoke, results), deadline=start + TOTAL_S)
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": args.smoke,
               "seconds": round(time.monotonic() - start, 1),
               "parts": [{"name": p.name, "status": p.status, "seconds": p.seconds, "note": p.note,
                          "output_tail": p.output[-2000:]} for p in done]}
    if not args.smoke:
        _write_json(ROOT / "bench" / "results" / "gpu_check.json", summary)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "gpu_check.json", summary)
        if not args.smoke and (ROOT / "bench" / "results").exists():
            shutil.copytree(ROOT / "bench" / "results", out / "results", dirs_exist_ok=True)
    print(table(done))
    print(f"total {summary['seconds']} s")
    return 0


def _write_json(path: Path, data) -> None:
    from fastticket.utils import atomic_write_text  # importable once installed (or in the source tree)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
