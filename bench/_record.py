"""Shared pieces of the benchmarks: sizes (full or smoke), providers, and the JSON records in bench/results/.

FASTTICKET_BENCH_SMOKE=1 runs every benchmark at tiny sizes, once, and records nothing (a smoke test).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

SMOKE = os.environ.get("FASTTICKET_BENCH_SMOKE", "0") == "1"
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_providers(op: str) -> list[str]:
    """The backends to compare on CPU: cpp (when built) and torch."""
    from fastticket.ops import available

    return [b for b in ("cpp", "torch") if b in available(op)]


def run(benchmark, fn, rounds: int, warmup: int = 1):
    """benchmark.pedantic with fixed rounds (one round in smoke mode)."""
    if SMOKE:
        return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


def _device() -> str:
    if torch.cuda.is_available():
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


def record(benchmark, name: str, provider: str, config: dict, peak_mem_mb: float | None = None) -> None:
    """Appends (replacing an older record with the same benchmark, provider, config and device) one
    measurement to bench/results/<name>.json. Nothing is written in smoke mode."""
    if SMOKE:
        return
    data = list(benchmark.stats.stats.data)
    rec = {
        "benchmark": name,
        "provider": provider,
        "config": config,
        "median_ms": _quantile(data, 0.5) * 1e3,
        "p20_ms": _quantile(data, 0.2) * 1e3,
        "p80_ms": _quantile(data, 0.8) * 1e3,
        "rounds": len(data),
        "peak_mem_mb": peak_mem_mb,
        "device": _device(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    records = json.loads(path.read_text()) if path.exists() else []
    key = (rec["benchmark"], rec["provider"], json.dumps(config, sort_keys=True), rec["device"])
    records = [r for r in records if (r["benchmark"], r["provider"], json.dumps(r["config"], sort_keys=True), r["device"]) != key]
    records.append(rec)
    path.write_text(json.dumps(records, indent=1) + "\n")
