"""LayerNorm(scale·x + residual), fused (Triton kernels + grid helpers only).

Rows are the B·T tokens, normalized over C. The scale (the FFN mask ν) is one value per example
(row // T), or one for all. Forward saves the row mean and 1/std (fp32); the backward recomputes
z = scale·x + residual, emits dz (= d residual), dx = scale·dz, r_t = ⟨dz_t, x_t⟩ per row (the host sums
r_t and |r_t| over tokens: dν and the `official` probe), and per-program partial sums of dweight and
dbias that the host adds in a fixed order: no atomics, bit-identical repeats.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ln_fwd(
    X, RES, Y, W, B, SCALE, MEAN, RSTD,
    s_xr, s_rr, s_s, ROWS, T, C, eps,
    SCALE_MODE: tl.constexpr,  # 0: none, 1: one scalar, 2: per example
    HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < ROWS
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * s_xr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    res = tl.load(RES + rows64[:, None] * s_rr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if SCALE_MODE == 1:
        x = x * tl.load(SCALE).to(tl.float32)
    elif SCALE_MODE == 2:
        x = x * tl.load(SCALE + (rows // T) * s_s, mask=rmask, other=0.0).to(tl.float32)[:, None]
    z = x + res
    mean = tl.sum(z, 1) / C
    zc = tl.where(mask, z - mean[:, None], 0.0)
    var = tl.sum(zc * zc, 1) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    y = zc * rstd[:, None] * w[None, :]
    if HAS_BIAS:  # ModernBERT's LayerNorm has none
        y += tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows64[:, None] * C + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(RSTD + rows, rstd, mask=rmask)


@triton.jit
def ln_bwd(
    X, RES, DY, W, SCALE, MEAN, RSTD, DX, DRES, R, DW, DB,
    s_xr, s_rr, s_dr, s_s, ROWS, T, C, BLOCKS_PER_PROG,
    SCALE_MODE: tl.constexpr, NEED_DX: tl.constexpr, NEED_DRES: tl.constexpr, NEED_R: tl.constexpr,
    NEED_DWB: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program pid handles row blocks pid·BLOCKS_PER_PROG ... (pid+1)·BLOCKS_PER_PROG - 1, in order."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    for i in range(0, BLOCKS_PER_PROG):
        rows = (pid * BLOCKS_PER_PROG + i) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < ROWS
        mask = rmask[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * s_xr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        res = tl.load(RES + rows64[:, None] * s_rr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * s_dr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        if SCALE_MODE == 1:
            s = tl.load(SCALE + rows * 0, mask=rmask, other=0.0).to(tl.float32)
        elif SCALE_MODE == 2:
            s = tl.load(SCALE + (rows // T) * s_s, mask=rmask, other=0.0).to(tl.float32)
        else:
            s = tl.where(rmask, 1.0, 0.0)
        z = x * s[:, None] + res
        xhat = tl.where(mask, (z - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, 1) / C
        c2 = tl.sum(wdy, 1) / C
        dz = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        dz = tl.where(mask, dz, 0.0)
        if NEED_DRES:
            tl.store(DRES + rows64[:, None] * C + cols[None, :], dz.to(DRES.dtype.element_ty), mask=mask)
        if NEED_DX:
            tl.store(DX + rows64[:, None] * C + cols[None, :], (dz * s[:, None]).to(DX.dtype.element_ty), mask=mask)
        if NEED_R:
            tl.store(R + rows, tl.sum(dz * x, 1), mask=rmask)
        if NEED_DWB:
            dw += tl.sum(dy * xhat, 0)
            db += tl.sum(dy, 0)
    if NEED_DWB:
        tl.store(DW + pid.to(tl.int64) * C + cols, dw, mask=cmask)
        tl.store(DB + pid.to(tl.int64) * C + cols, db, mask=cmask)


# ------------------------------------------------------------------------------------------ grid helpers


def launch_config(rows: int, channels: int, interpret: bool, max_programs: int = 1024) -> dict:
    """BLOCK_C (next power of two of C), rows per tile, warps, and the backward's programs × row blocks."""
    block_c = triton.next_power_of_2(max(channels, 1))
    if interpret:
        block_r = max(1, min(triton.next_power_of_2(rows), (1 << 16) // block_c))
        num_warps = 1
    else:
        block_r = max(1, min(16, 4096 // block_c))
        num_warps = 4 if block_c <= 2048 else 8 if block_c <= 8192 else 16
    n_blocks = triton.cdiv(rows, block_r)
    programs = min(n_blocks, max_programs)
    per_prog = triton.cdiv(n_blocks, programs)
    programs = triton.cdiv(n_blocks, per_prog)
    return dict(block_r=block_r, block_c=block_c, num_warps=num_warps, n_blocks=n_blocks,
                bwd_programs=programs, blocks_per_prog=per_prog)
