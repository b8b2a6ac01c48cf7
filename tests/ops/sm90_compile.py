"""Compile every Triton kernel of the triton backend for sm_90 (H100/H200) on a machine without a GPU, as the
backend launches them at production shapes, and report per compiled kernel: registers, spills, wgmma.

How: a stand-in Triton driver whose target is cuda sm_90; the backends' own code runs on meta tensors laid
out as the encoder makes them (q/k/v views of [B, T, H·D] projections, the output and gradients in
[B, T, H, D] memory), and their launch function is replaced by `warmup` (compile, no launch) of every
autotuning config the kernel would try. ptxas (shipped with Triton) reports registers and spill bytes of
each PTX; the PTX tells whether tensor-core wgmma instructions are used. Run it without TRITON_INTERPRET
(tests/ops/test_sm90_compile.py runs it in subprocesses): `python tests/ops/sm90_compile.py [--shard I/N]`
prints one JSON record per compiled kernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import torch

# (name, heads, head dim): the production attention shapes at T = 128 (and the long path at T = 512)
MODELS = [("minilm", 12, 32), ("bert-base", 12, 64)]
DTYPES = [torch.bfloat16, torch.float16]


def _install_sm90_driver():
    import triton  # noqa: F401
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.runtime.driver import driver

    class Sm90(DriverBase):
        @classmethod
        def is_active(cls):
            return False

        def map_python_to_cpp_type(self, ty):
            raise NotImplementedError

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("meta")

        def get_benchmarker(self):
            raise RuntimeError("no benchmarking without a GPU")

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

    driver.set_active(Sm90())


def _compile_instead_of_launch(records: list, case: str):
    """tb.launch replacement: compile every config the kernel would try (tensors -> dtypes: aligned)."""

    def launch(kernel, grid, *args, **meta):
        args = [a.dtype if isinstance(a, torch.Tensor) else a for a in args]
        compiled = kernel.warmup(*args, grid=(1,), **meta)
        configs = getattr(kernel, "configs", None)
        for k in compiled if isinstance(compiled, list) else [compiled]:
            records.append(_describe(k, case, tuned=configs is not None))

    return launch


def _describe(kernel, case: str, tuned: bool) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = kernel.asm["ptx"]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        log = subprocess.run([get_ptxas(90).path, "--gpu-name=sm_90a", "-v", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
    finally:
        os.unlink(f.name)
    number = lambda pattern: sum(int(x) for x in re.findall(pattern, log))  # noqa: E731
    md = kernel.metadata
    return dict(kernel=md.name, case=case, warps=md.num_warps, stages=md.num_stages, shared=md.shared,
                registers=max([int(x) for x in re.findall(r"Used (\d+) registers", log)] or [0]),
                spill_stores=number(r"(\d+) bytes spill stores"), spill_loads=number(r"(\d+) bytes spill loads"),
                wgmma=bool(re.search(r"wgmma\.mma_async", ptx)), mma_sync=len(re.findall(r"mma\.sync", ptx)),
                tiles=_tiles(kernel), tuned=tuned)


def _tiles(kernel) -> str:
    names = [p for p in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_R", "BLOCK_C", "BLOCK_K")]
    consts = {kernel.src.fn.arg_names[k[0]]: v for k, v in kernel.src.constants.items()} if hasattr(kernel, "src") else {}
    return ",".join(f"{n}={consts[n]}" for n in names if n in consts)


def _projection(batch, seq, width, dtype):
    """A [B, T, width] projection output as nn.Linear returns it (meta)."""
    return torch.empty(batch, seq, width, device="meta", dtype=dtype)


def attention_case(heads, dim, seq, dtype, dropout, window, bias=False, batch=32):
    """One training call as the encoder makes it: fwd + bwd, per-example head scale with grad, lengths."""
    from fastticket.ops.triton_attention import triton_masked_attention

    width = heads * dim
    q, k, v = (_projection(batch, seq, width, dtype).view(batch, seq, heads, dim).transpose(1, 2).requires_grad_(True)
               for _ in range(3))
    hs = torch.empty(batch, heads, device="meta", requires_grad=True)
    attn_bias = torch.empty(batch, heads, seq, seq, device="meta", dtype=dtype, requires_grad=True) if bias else None
    lengths = torch.empty(batch, device="meta", dtype=torch.int64)
    out = triton_masked_attention(q, k, v, hs, lengths, 0.1 if dropout else 0.0, None, None, attn_bias, window)
    dout = _projection(batch, seq, width, dtype).view(batch, seq, heads, dim).transpose(1, 2)
    out.backward(dout)


def layernorm_case(channels, dtype, seq=128, batch=32):
    from fastticket.ops.triton_layernorm import triton_masked_residual_layernorm

    x, residual = (_projection(batch, seq, channels, dtype).requires_grad_(True) for _ in range(2))
    weight, bias = (torch.empty(channels, device="meta", requires_grad=True) for _ in range(2))
    scale = torch.empty(batch, device="meta", requires_grad=True)
    y = triton_masked_residual_layernorm(x, residual, scale, weight, bias, 1e-12, None)
    y.backward(torch.empty_like(y))


def head_projection_case(channels, head_dim, dtype, seq=128, batch=32):
    from fastticket.ops.head_projection import triton_head_projection

    x = _projection(batch, seq, channels, dtype).requires_grad_(True)
    weight = torch.empty(channels, channels, device="meta", dtype=dtype, requires_grad=True)
    bias = torch.empty(channels, device="meta", dtype=dtype, requires_grad=True)
    table = torch.empty(channels // head_dim // 2, device="meta", dtype=torch.int64)
    y = triton_head_projection(x, weight, bias, table, head_dim, "in")
    triton_head_projection(y, weight, bias, table, head_dim, "out").backward(
        torch.empty(batch, seq, channels, device="meta", dtype=dtype))


def cases():
    """(label, thunk): attention at T = 128 for both models × bf16/fp16 × dropout × window; T = 64 and 256
    (other T buckets, the fused kernel's extremes) and the long path at T = 512 in bf16; the DeBERTa bias
    and fp32 (TF32) variants; residual LayerNorm at C = 384 / 768; the head-table projection."""
    out = []
    for name, heads, dim in MODELS:
        for dtype in DTYPES:
            for dropout in (False, True):
                for window in (None, 32):
                    label = f"attention {name} T128 {str(dtype)[6:]} dropout={dropout} window={window}"
                    out.append((label, lambda h=heads, d=dim, t=dtype, p=dropout, w=window: attention_case(h, d, 128, t, p, w)))
        for seq in (64, 256):
            for dropout in (False, True):
                out.append((f"attention {name} T{seq} bfloat16 dropout={dropout}",
                            lambda h=heads, d=dim, t=seq, p=dropout: attention_case(h, d, t, torch.bfloat16, p, None)))
    out.append(("attention bert-base T128 bf16 bias", lambda: attention_case(12, 64, 128, torch.bfloat16, False, None, True)))
    out.append(("attention bert-base T128 fp32 (TF32)", lambda: attention_case(12, 64, 128, torch.float32, False, None)))
    for dropout, window, bias in ((False, None, False), (True, None, False), (False, 64, False), (False, None, True)):
        out.append((f"attention bert-base T512 bf16 dropout={dropout} window={window} bias={bias} (long path)",
                    lambda p=dropout, w=window, b=bias: attention_case(12, 64, 512, torch.bfloat16, p, w, b, batch=8)))
    for channels in (384, 768):
        for dtype in DTYPES:
            out.append((f"layernorm C{channels} {str(dtype)[6:]}", lambda c=channels, t=dtype: layernorm_case(c, t)))
    for dtype in DTYPES:
        out.append((f"head_projection C768 D64 {str(dtype)[6:]}", lambda t=dtype: head_projection_case(768, 64, t)))
    return out


def main(argv) -> int:
    """argv: [--shard I/N] (every N-th case from the I-th, for running shards side by side)."""
    os.environ.pop("TRITON_INTERPRET", None)
    _install_sm90_driver()
    from fastticket.ops import triton_backend as tb

    index, count = map(int, argv[argv.index("--shard") + 1].split("/")) if "--shard" in argv else (0, 1)
    records = []
    for label, run in cases()[index::count]:
        tb.launch = _compile_instead_of_launch(records, label)
        try:
            run()
        except Exception as exc:  # noqa: BLE001  (reported per case; the test fails on it)
            records.append(dict(kernel=None, case=label, error=f"{type(exc).__name__}: {str(exc)[:1500]}"))
    for r in records:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
