"""bench/: every bench file runs at tiny sizes (FASTTICKET_BENCH_SMOKE=1: one round, nothing recorded), the
report computes the P1–P5 ratios (and reports missing providers) from records, and `fastticket bench`
drives both. No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_FILES = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))


def test_every_op_has_a_bench_file():
    """One name runs through an op: fastticket/ops/<op>.py <-> bench/bench_<op>.py; and `fastticket bench` knows it."""
    from fastticket.cli import BENCH_PARTS

    helpers = {"__init__", "dispatch", "cpp_backend", "triton_backend", "triton_attention", "triton_layernorm", "mask_scale"}
    ops = sorted({p.stem for p in (ROOT / "fastticket" / "ops").glob("*.py")} - helpers)
    assert [op for op in ops if f"bench_{op}.py" not in BENCH_FILES] == []
    assert sorted(f"bench_{p}.py" for p in BENCH_PARTS) == BENCH_FILES


def test_benchmarks_smoke(tmp_path):
    """All bench files at tiny sizes; nothing may be written to the results directory."""
    env = {**os.environ, "FASTTICKET_BENCH_SMOKE": "1", "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "FASTTICKET_BENCH_RESULTS": str(tmp_path / "results")}
    files = [str(ROOT / "bench" / f) for f in BENCH_FILES]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                          "-W", "ignore::UserWarning", *files], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def _rec(bench, provider, config, ms, device="cpu: test, 2 threads", **extra):
    return {"benchmark": bench, "provider": provider, "config": {"dtype": "float32", **config}, "median_ms": ms,
            "p20_ms": None if ms is None else ms * 0.9, "p80_ms": None if ms is None else ms * 1.1, "rounds": 3,
            "peak_mem_mb": None, "device": device, "torch": "x", "triton": None, "commit": None, "date": "d",
            "loadavg": [1.0, 1.0, 1.0], "threads": 2, "missing": None if ms is not None else "not here", **extra}


@pytest.fixture
def results(tmp_path):
    imp = {"name": "m", "B": 32, "T": 128}
    att = {"shape": "s", "B": 2, "H": 2, "T": 8, "D": 4, "mode": "fwd_bwd"}
    rew = {"name": "m", "level": 3, "ideal_speedup": 2.0}
    recs = {
        "importance": [_rec("importance", "fastticket", imp, 10.0), _rec("importance", "sdpa_plain", imp, 10.0),
                       _rec("importance", "authors", imp, 40.0), _rec("importance", "authors_frozen", imp, 20.0),
                       _rec("importance", "loop", imp, 100.0)],
        "attention": [_rec("attention", "cpp", att, 1.0), _rec("attention", "sdpa", att, 2.0),
                      _rec("attention", "triton", att, None),
                      _rec("attention", "byte_floor", att, None, byte_floor_ms=0.25) | {"missing": None}],
        "rewind": [_rec("rewind", "masked_dense", rew, 9.0), _rec("rewind", "compact", rew, 5.0)],
        "search": [_rec("search", "fastticket", {"trials": 9, "train_examples": 8, "batch_size": 4, "max_length": 32}, 5.0),
                   _rec("search", "masked_dense", {"trials": 9, "train_examples": 8, "batch_size": 4, "max_length": 32}, 10.0)],
        "sharing": [_rec("sharing", "fastticket", {"model": "m"}, None), _rec("sharing", "masked_dense", {"model": "m"}, None)],
    }
    d = tmp_path / "results"
    d.mkdir()
    for name, r in recs.items():
        (d / f"{name}.json").write_text(json.dumps(r))
    # summaries beside the records (make gpu-check's, the sm_90 compile table): not records, never read as such
    (d / "gpu_check.json").write_text(json.dumps({"date": "2026-12-03", "parts": []}))
    (d / "sm90_compile.json").write_text(json.dumps({"benchmark": "sm90_compile", "kernels": []}))
    return d


def test_report_ratios(results):
    sys.path.insert(0, str(ROOT))
    try:
        from bench import report
    finally:
        sys.path.remove(str(ROOT))
    (device, recs), = report.load(results).items()
    rows = {r["goal"].split(":")[0] if r["goal"].startswith("P2") else r["goal"]: r for r in report.ratio_rows(recs)}
    by_prefix = lambda p: [r for g, r in rows.items() if g.startswith(p)]  # noqa: E731
    p1 = by_prefix("P1")
    assert [round(r["ratio"], 2) for r in p1] == [1.0, 4.0, 2.0, 10.0]
    assert [r["pass"] for r in p1] == [True, True, False, False]
    p2 = [r for r in report.ratio_rows(recs) if r["goal"].startswith("P2")]
    assert [round(r["ratio"], 2) for r in p2] == [2.0, 4.0]
    (p3,) = by_prefix("P3")
    assert round(p3["ratio"], 2) == 0.9 and p3["pass"]
    (p4,) = by_prefix("P4")
    assert p4["ratio"] == 0.5 and p4["pass"]
    (p5,) = by_prefix("P5")
    assert p5["ratio"] is None and p5["pass"] is None and "missing" in p5["note"]
    assert "| P1" in report.table(device, recs)


def test_report_search_workers_scaling(results):
    """P4 scaling: trials/hour on k workers and the speed-up over one (recorded by bench_search.py)."""
    cfg = {"trials": 18, "train_examples": 48, "batch_size": 16, "max_length": 64}
    (results / "search_workers.json").write_text(json.dumps(
        [_rec("search_workers", "workers_1", cfg, 3600e3), _rec("search_workers", "workers_2", cfg, 1800e3)]))
    sys.path.insert(0, str(ROOT))
    try:
        from bench import report
    finally:
        sys.path.remove(str(ROOT))
    (_, recs), = report.load(results).items()
    (row,) = [r for r in report.ratio_rows(recs) if r["goal"].startswith("P4 scaling")]
    assert row["ratio"] == 2.0 and row["pass"] is None
    assert row["note"] == "36 trials/h on 2 workers vs 18 on 1"


def test_report_plots_and_cli(results, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastticket", "bench", "--report-only", "--results", str(results)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "P4 8-level sweep" in out.stdout and "missing" in out.stdout
    assert list((results / "plots").glob("*.png"))


def test_cli_bench_rejects_unknown_part():
    from fastticket.cli import main

    assert main(["bench", "no_such_op", "--report-only"]) == 2
