"""Every Triton kernel of the triton backend compiles for sm_90 (H100/H200) on this CPU machine, at the
production configurations it would launch (BERT-base D = 64 and MiniLM D = 32 at T = 128, bf16 and fp16,
dropout on/off, window on/off; other T buckets, the long backward path at T = 512, the bias and fp32
variants; residual LayerNorm; head tables), every autotuning config each launch would try: no compile
error, no register spill (ptxas), and tensor-core wgmma in every kernel whose tiles allow it (all those
with a tl.dot: their smallest M tile is a warpgroup's 64 rows or more somewhere).

tests/ops/sm90_compile.py does the work (Triton's compiler with an sm_90 target and the backends' own
launch code on meta tensors) in two subprocesses without TRITON_INTERPRET, side by side; Triton's cache
makes reruns fast. Skipped only where triton is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

HERE = Path(__file__).resolve().parent
SHARDS = 2
KERNELS = {"_attn_fwd", "_attn_bwd_fused", "_attn_bwd_prep", "_attn_bwd_dkdv", "_attn_bwd_dq", "ln_fwd", "ln_bwd",
           "gathered_mm"}
WITHOUT_DOTS = {"ln_fwd", "ln_bwd"}


@pytest.fixture(scope="module")
def records():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = [subprocess.Popen([sys.executable, str(HERE / "sm90_compile.py"), "--shard", f"{i}/{SHARDS}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=HERE.parents[1]) for i in range(SHARDS)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr[-3000:]
        out += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert out, "no kernel was compiled"
    return out


def _compiled(records):
    return [r for r in records if not r.get("error")]


def test_every_case_compiles(records):
    failed = [f"{r['case']}: {r['error']}" for r in records if r.get("error")]
    assert not failed, "\n".join(failed)


def test_every_kernel_and_case_is_covered(records):
    """Each case compiled something; every kernel the backends launch was compiled."""
    from .sm90_compile import cases

    done = {r["case"] for r in _compiled(records)}
    assert [label for label, _ in cases() if label not in done] == []
    assert KERNELS <= {r["kernel"] for r in _compiled(records)}


def test_no_register_spills(records):
    spills = [f"{r['kernel']} [{r['tiles']}, {r['warps']} warps, {r['stages']} stages] in {r['case']}: "
              f"{r['spill_stores']} B stores / {r['spill_loads']} B loads, {r['registers']} registers"
              for r in _compiled(records) if r["spill_stores"] or r["spill_loads"]]
    assert not spills, "\n".join(spills)


def test_wgmma_where_the_tiles_allow(records):
    missing = [f"{r['kernel']} [{r['tiles']}] in {r['case']}" for r in _compiled(records)
               if r["kernel"] not in WITHOUT_DOTS and not r["wgmma"]]
    assert not missing, "no wgmma in:\n" + "\n".join(missing)
