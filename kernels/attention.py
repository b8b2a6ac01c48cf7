"""Masked attention, FlashAttention-2 style (Triton kernels + grid helpers only).

Forward: online softmax over key blocks up to each example's length (right padding), no T×T tensor; the
row log-sum-exp (base 2, scaled) is saved. The unscaled context ctx and out = ξ·ctx are written (ξ the
per-(b, h) head scale); ctx is kept for the backward because ξ may be exactly 0 (a pruned head).

Backward: a pre-pass computes r_t = ⟨dout_t, ctx_t⟩ per query row (FA2's Delta up to the factor ξ) and,
per query block, the partial sums Σ r_t and Σ |r_t|, from which the host sums dξ and the `official`
probe in a fixed order (deterministic, no atomics). Since dctx = ξ·dout, every input gradient is ξ times
the gradient computed with dout and r: the kernels work with those and multiply by ξ at the end. dk/dv
(one program per key block) and dq (one program per query block) are separate kernels, so no reduction
needs atomics.

Dropout: a counter-based RNG (Philox, tl.rand) keyed by (seed, ((b·H + h)·T + query)·T + key); the
backward regenerates the same mask. DROPOUT is a constexpr, so p = 0 compiles a kernel with no RNG.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _keep(seed, bh, offs_m, offs_n, T, dropout_p):
    """Dropout keep mask for query rows offs_m and key columns offs_n of head bh ([M, N] block)."""
    rows = (bh.to(tl.int64) * T + offs_m.to(tl.int64)) * T
    rnd = tl.rand(seed, rows[:, None] + offs_n[None, :].to(tl.int64))
    return rnd >= dropout_p


@triton.jit
def _keep_t(seed, bh, offs_m, offs_n, T, dropout_p):
    """_keep's mask laid out [N, M] (keys × queries), drawn from the same counters."""
    rows = (bh.to(tl.int64) * T + offs_m.to(tl.int64)) * T
    rnd = tl.rand(seed, rows[None, :] + offs_n[:, None].to(tl.int64))
    return rnd >= dropout_p


@triton.jit
def _attn_fwd(
    Q, K, V, CTX, OUT, LSE, SCALE, LENS,
    sm_scale, seed, dropout_p,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
    H, T, D,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, WRITE_OUT: tl.constexpr, DROPOUT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENS:
        L = tl.minimum(tl.load(LENS + b), T)
    else:
        L = T
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    q_base = Q + b.to(tl.int64) * s_qb + h.to(tl.int64) * s_qh
    k_base = K + b.to(tl.int64) * s_kb + h.to(tl.int64) * s_kh
    v_base = V + b.to(tl.int64) * s_vb + h.to(tl.int64) * s_vh
    q = tl.load(q_base + offs_m[:, None] * s_qt + offs_d[None, :], mask=(offs_m[:, None] < T) & dmask[None, :], other=0.0)
    qk_scale = sm_scale * 1.4426950408889634
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)
    for start_n in range(0, L, BLOCK_N):
        n = start_n + offs_n
        nmask = n < L
        kt = tl.load(k_base + n[None, :] * s_kt + offs_d[:, None], mask=nmask[None, :] & dmask[:, None], other=0.0)
        v = tl.load(v_base + n[:, None] * s_vt + offs_d[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * qk_scale
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            p = tl.where(_keep(seed, bh, offs_m, n, T, dropout_p), p * inv_keep, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    acc = acc / l_safe[:, None]
    mrow = offs_m < T
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_safe), mask=mrow)
    o_off = bh.to(tl.int64) * T * D + offs_m[:, None] * D + offs_d[None, :]
    omask = mrow[:, None] & dmask[None, :]
    tl.store(CTX + o_off, acc.to(CTX.dtype.element_ty), mask=omask)
    if WRITE_OUT:
        if HAS_SCALE:
            xi = tl.load(SCALE + bh)
            acc = acc * xi
        tl.store(OUT + o_off, acc.to(OUT.dtype.element_ty), mask=omask)


@triton.jit
def _attn_bwd_pre(
    DO, CTX, R, RSUM, RABS, T, D, NUM_M,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """r_t = ⟨dout_t, ctx_t⟩ (fp32) per row, and this block's Σ r_t, Σ |r_t|."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mrow = offs_m < T
    mask = mrow[:, None] & (offs_d[None, :] < D)
    off = bh.to(tl.int64) * T * D + offs_m[:, None] * D + offs_d[None, :]
    do = tl.load(DO + off, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(CTX + off, mask=mask, other=0.0).to(tl.float32)
    r = tl.sum(do * o, 1)
    tl.store(R + bh.to(tl.int64) * T + offs_m, r, mask=mrow)
    tl.store(RSUM + bh.to(tl.int64) * NUM_M + pid_m, tl.sum(r, 0))
    tl.store(RABS + bh.to(tl.int64) * NUM_M + pid_m, tl.sum(tl.abs(r), 0))


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, R, DK, DV, SCALE, LENS,
    sm_scale, seed, dropout_p,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
    H, T, D,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, DROPOUT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One key block: dv = ξ Σ_i P_drop[i, j] do_i, dk = ξ·scale Σ_i dS[i, j] q_i over all query rows."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENS:
        L = tl.minimum(tl.load(LENS + b), T)
    else:
        L = T
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    nmask = offs_n < L
    q_base = Q + b.to(tl.int64) * s_qb + h.to(tl.int64) * s_qh
    k_base = K + b.to(tl.int64) * s_kb + h.to(tl.int64) * s_kh
    v_base = V + b.to(tl.int64) * s_vb + h.to(tl.int64) * s_vh
    row_base = bh.to(tl.int64) * T
    k = tl.load(k_base + offs_n[:, None] * s_kt + offs_d[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
    v = tl.load(v_base + offs_n[:, None] * s_vt + offs_d[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
    qk_scale = sm_scale * 1.4426950408889634
    inv_keep = 1.0 / (1.0 - dropout_p)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    m_end = tl.where(start_n < L, T, 0)  # a block of padded keys only: nothing to do
    for start_m in range(0, m_end, BLOCK_M):
        offs_m = start_m + offs_m0
        mrow = offs_m < T
        qt = tl.load(q_base + offs_m[None, :] * s_qt + offs_d[:, None], mask=mrow[None, :] & dmask[:, None], other=0.0)
        dot_ = tl.load(DO + (row_base + offs_m[None, :]) * D + offs_d[:, None], mask=mrow[None, :] & dmask[:, None], other=0.0)
        lse = tl.load(LSE + row_base + offs_m, mask=mrow, other=float("inf"))
        r = tl.load(R + row_base + offs_m, mask=mrow, other=0.0)
        st = tl.dot(k, qt, input_precision=PREC) * qk_scale  # [N, M]
        st = tl.where(nmask[:, None] & mrow[None, :], st - lse[None, :], float("-inf"))
        pt = tl.exp2(st)
        dpt = tl.dot(v, dot_.to(v.dtype), input_precision=PREC)  # [N, M]: do_i · v_j
        if DROPOUT:
            keep = _keep_t(seed, bh, offs_m, offs_n, T, dropout_p)  # [N, M]: the forward's mask, transposed
            pdt = tl.where(keep, pt * inv_keep, 0.0)
            dpt = tl.where(keep, dpt * inv_keep, 0.0)
        else:
            pdt = pt
        dv += tl.dot(pdt.to(v.dtype), tl.trans(dot_).to(v.dtype), input_precision=PREC)
        dst = pt * (dpt - r[None, :])
        dk += tl.dot(dst.to(k.dtype), tl.trans(qt), input_precision=PREC)
    xi = 1.0
    if HAS_SCALE:
        xi = tl.load(SCALE + bh)
    dk = dk * (sm_scale * xi)
    dv = dv * xi
    smask = (offs_n[:, None] < T) & dmask[None, :]
    off = (row_base + offs_n[:, None]) * D + offs_d[None, :]
    tl.store(DK + off, dk.to(DK.dtype.element_ty), mask=smask)
    tl.store(DV + off, dv.to(DV.dtype.element_ty), mask=smask)


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, R, DQ, SCALE, LENS,
    sm_scale, seed, dropout_p,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
    H, T, D,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, DROPOUT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One query block: dq = ξ·scale Σ_j dS[i, j] k_j over the real keys."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENS:
        L = tl.minimum(tl.load(LENS + b), T)
    else:
        L = T
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    mrow = offs_m < T
    q_base = Q + b.to(tl.int64) * s_qb + h.to(tl.int64) * s_qh
    k_base = K + b.to(tl.int64) * s_kb + h.to(tl.int64) * s_kh
    v_base = V + b.to(tl.int64) * s_vb + h.to(tl.int64) * s_vh
    row_base = bh.to(tl.int64) * T
    q = tl.load(q_base + offs_m[:, None] * s_qt + offs_d[None, :], mask=mrow[:, None] & dmask[None, :], other=0.0)
    do = tl.load(DO + (row_base + offs_m[:, None]) * D + offs_d[None, :], mask=mrow[:, None] & dmask[None, :], other=0.0)
    do = do.to(q.dtype)
    lse = tl.load(LSE + row_base + offs_m, mask=mrow, other=float("inf"))
    r = tl.load(R + row_base + offs_m, mask=mrow, other=0.0)
    qk_scale = sm_scale * 1.4426950408889634
    inv_keep = 1.0 / (1.0 - dropout_p)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, L, BLOCK_N):
        n = start_n + offs_n0
        nmask = n < L
        k = tl.load(k_base + n[:, None] * s_kt + offs_d[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
        vt = tl.load(v_base + n[None, :] * s_vt + offs_d[:, None], mask=nmask[None, :] & dmask[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        s = tl.where(nmask[None, :] & mrow[:, None], s - lse[:, None], float("-inf"))
        p = tl.exp2(s)
        dp = tl.dot(do, vt, input_precision=PREC)
        if DROPOUT:
            dp = tl.where(_keep(seed, bh, offs_m, n, T, dropout_p), dp * inv_keep, 0.0)
        ds = p * (dp - r[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    xi = 1.0
    if HAS_SCALE:
        xi = tl.load(SCALE + bh)
    dq = dq * (sm_scale * xi)
    tl.store(DQ + (row_base + offs_m[:, None]) * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=mrow[:, None] & dmask[None, :])


# ------------------------------------------------------------------------------------------ grid helpers


def block_sizes(seq: int, dim: int, interpret: bool) -> dict:
    """Tile sizes and launch settings for T = seq, D = dim (BLOCK_D the next power of two >= 16)."""
    block_d = max(16, triton.next_power_of_2(dim))
    small = max(16, triton.next_power_of_2(seq))
    if interpret:  # the interpreter pays per program and per op: 64 measured fastest
        return dict(fwd_m=min(64, small), fwd_n=min(64, small), bwd_m=min(64, small), bwd_n=min(64, small),
                    block_d=block_d, num_warps=1, num_stages=1)
    big = block_d > 64
    return dict(fwd_m=min(64 if big else 128, small), fwd_n=min(64, small),
                bwd_m=min(32 if big else 64, small), bwd_n=min(64, small),
                block_d=block_d, num_warps=8 if big else 4, num_stages=2)


def grid(seq: int, block: int, batch_heads: int) -> tuple[int, int]:
    return (triton.cdiv(seq, block), batch_heads)
