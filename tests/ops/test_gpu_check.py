"""scripts/gpu_check.py (`make gpu-check`) without a GPU: its part runner records a failing or timed-out part
and goes on; the --smoke run executes every part's code path on CPU at tiny sizes (install skipped, the
gpu tests skip, the benchmarks in smoke mode, the report read-only) and writes its summary to --out only."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_parts_fail_and_time_out_without_stopping_the_run(gpu_check, monkeypatch):
    import time

    monkeypatch.setitem(gpu_check.BUDGETS, "slow", 6)

    def boom(budget):
        raise RuntimeError("no CUDA device")

    def slow(budget):
        rc, out = gpu_check.run_command([sys.executable, "-c", "import time; time.sleep(30)"], budget)
        return gpu_check._status(rc), "", out

    done = gpu_check.run_parts([("boom", boom), ("slow", slow), ("fine", lambda b: ("ok", "done", ""))],
                               deadline=time.monotonic() + 60)
    assert [(p.name, p.status) for p in done] == [("boom", "failed"), ("slow", "timeout"), ("fine", "ok")]
    assert "no CUDA device" in done[0].note and done[1].seconds < 20
    late = gpu_check.run_parts([("late", lambda b: ("ok", "", ""))], deadline=time.monotonic() + 1)
    assert late[0].status == "skipped"
    assert "late" in gpu_check.table(late) and "skipped" in gpu_check.table(late)


@pytest.mark.slow
def test_smoke_run_executes_every_part(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {p["name"]: p["status"] for p in summary["parts"]}
    assert status == {"install": "skipped", "env": "ok", "tests": "ok", "P2": "ok", "P1": "ok", "P3": "ok",
                      "report": "ok"}, summary["parts"]
    assert "part" in out.stdout.splitlines()[-len(status) - 2] and out.stdout.rstrip().splitlines()[-1].startswith("total")
    assert not (tmp_path / "smoke-results").exists() or not any((tmp_path / "smoke-results").iterdir())
