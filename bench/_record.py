"""Shared pieces of the benchmarks: sizes (smoke / CPU / GPU), providers, interleaved timing, and the JSON
records in bench/results/.

Timing: every test measures all its providers *side by side in one run*, interleaved: each round calls every
provider once, in a rotated order, so load spikes of a shared machine hit all providers alike. The
pytest-benchmark fixture times the whole round (its table shows rounds); the per-provider times are taken
inside with perf_counter (CUDA: synchronized before and after each call) and recorded here.

FASTTICKET_BENCH_SMOKE=1 runs every benchmark at tiny sizes, once, and records nothing (a smoke test).
FASTTICKET_BENCH_DTYPE overrides the dtype (default: bfloat16 on CUDA, float32 on CPU).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

SMOKE = os.environ.get("FASTTICKET_BENCH_SMOKE", "0") == "1"
RESULTS = Path(os.environ.get("FASTTICKET_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = getattr(torch, os.environ.get("FASTTICKET_BENCH_DTYPE", "bfloat16" if CUDA else "float32"))
DTYPE_NAME = str(DTYPE).replace("torch.", "")
if SMOKE:  # tiny ops: an OpenMP team on a busy 2-core machine stalls them by milliseconds each
    torch.set_num_threads(1)


def scale(smoke, cpu, gpu):
    """The value for this run: tiny in smoke mode, small on CPU, the issue's sizes on GPU."""
    return smoke if SMOKE else gpu if CUDA else cpu


# ---------------------------------------------------------------- providers

def op_providers(op: str) -> tuple[dict[str, str], dict[str, str]]:
    """(runnable, missing) fastticket backends of `op` on this device: {provider: backend} and
    {provider: reason}. Every backend of fastticket.ops.BACKENDS appears in one of the two."""
    from fastticket.ops import BACKENDS, available

    have = available(op)
    ok, missing = {}, {}
    for b in BACKENDS:
        if b not in have:
            missing[b] = f"backend {b!r} is not registered for {op} here" + (
                " (no CUDA torch)" if b == "cuda" and not CUDA else "")
        elif b == "triton" and not CUDA and not SMOKE:
            missing[b] = "triton runs CPU tensors only under TRITON_INTERPRET=1 (an interpreter, not a timing)"
        elif b == "triton" and not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
            missing[b] = "triton on CPU needs TRITON_INTERPRET=1"
        elif b == "cuda" and not CUDA:
            missing[b] = "no CUDA device"
        elif b == "cpp" and CUDA:
            missing[b] = "cpp is the CPU extension (CUDA tensors go to cuda/triton)"
        else:
            ok[b] = b
    return ok, missing


def flex_attention_or_reason():
    """(flex_attention, None) when FlexAttention is importable, else (None, reason)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return None, f"torch.nn.attention.flex_attention not importable: {exc}"
    return flex_attention, None


# ---------------------------------------------------------------- timing

def _sync():
    if CUDA:
        torch.cuda.synchronize()


def interleaved(benchmark, fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1):
    """Times every fn of `fns` side by side: `warmup` untimed rounds, then `rounds` rounds, each calling
    every provider once (the order rotates each round). Returns {provider: {"times": [s], "peak_mem_mb"}}.
    The pytest-benchmark fixture times the rounds (smoke mode: one round, no warm-up)."""
    names = list(fns)
    out = {n: {"times": [], "peak_mem_mb": None} for n in names}
    state = {"round": 0}
    if SMOKE:
        rounds, warmup = 1, 0

    def one_round():
        r = state["round"]
        state["round"] += 1
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            gc.collect()
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            _sync()
            t0 = time.perf_counter()
            fns[n]()
            _sync()
            dt = time.perf_counter() - t0
            if r >= warmup:
                out[n]["times"].append(dt)
                if CUDA:
                    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                    out[n]["peak_mem_mb"] = max(out[n]["peak_mem_mb"] or 0.0, peak)

    for _ in range(warmup):
        one_round()
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    # --benchmark-disable runs one_round once: make sure every provider has at least one timed call
    while not all(out[n]["times"] for n in names):
        one_round()
    benchmark.extra_info["median_ms"] = {n: _quantile(out[n]["times"], 0.5) * 1e3 for n in names}
    return out


# ---------------------------------------------------------------- records

def _device() -> str:
    if CUDA:
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads"


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001  (not installed, or broken on this machine)
        return None


def _quantile(data, q: float) -> float:
    data = sorted(data)
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _write(name: str, recs: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    records = json.loads(path.read_text()) if path.exists() else []

    def key(r):
        return (r["benchmark"], r["provider"], json.dumps(r["config"], sort_keys=True), r["device"])

    new = {key(r) for r in recs}
    records = [r for r in records if key(r) not in new] + recs
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    tmp.replace(path)


def _base(name: str, provider: str, config: dict) -> dict:
    return {
        "benchmark": name, "provider": provider, "config": {"dtype": DTYPE_NAME, **config},
        "device": _device(), "torch": torch.__version__, "triton": _triton_version(), "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads(),
    }


def record(name: str, results: dict, config: dict, missing: dict[str, str] | None = None,
           extra: dict[str, dict] | None = None) -> None:
    """One record per provider in bench/results/<name>.json (replacing older records with the same
    benchmark, provider, config and device); a missing provider gets a record with median_ms null and
    its reason. Nothing is written in smoke mode."""
    if SMOKE:
        return
    recs = []
    for provider, r in results.items():
        t = r["times"]
        rec = _base(name, provider, config)
        rec.update({"median_ms": _quantile(t, 0.5) * 1e3, "p20_ms": _quantile(t, 0.2) * 1e3,
                    "p80_ms": _quantile(t, 0.8) * 1e3, "rounds": len(t), "peak_mem_mb": r["peak_mem_mb"],
                    "missing": None})
        rec.update((extra or {}).get(provider, {}))
        recs.append(rec)
    for provider, reason in (missing or {}).items():
        rec = _base(name, provider, config)
        rec.update({"median_ms": None, "p20_ms": None, "p80_ms": None, "rounds": 0, "peak_mem_mb": None,
                    "missing": reason})
        recs.append(rec)
    _write(name, recs)


def record_value(name: str, provider: str, config: dict, **values) -> None:
    """A record that is not a timing (e.g. the measured copy bandwidth, or an analytic FLOP count)."""
    if SMOKE:
        return
    rec = _base(name, provider, config)
    rec.update({"median_ms": None, "p20_ms": None, "p80_ms": None, "rounds": 0, "peak_mem_mb": None,
                "missing": None, **values})
    _write(name, [rec])


def to_device(x):
    return x.to(DEVICE) if isinstance(x, torch.Tensor) else x


def checked(fns: dict, missing: dict, name: str, make: Callable[[], Callable[[], object]]) -> None:
    """Adds provider `name` (the callable make() returns) to `fns` after one trial call; a provider that
    cannot be built or run here is recorded in `missing` with its reason instead."""
    try:
        fn = make()
        fn()
        _sync()
    except Exception as exc:  # noqa: BLE001  (a peer that cannot run here is reported, not fatal)
        missing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return
    fns[name] = fn
