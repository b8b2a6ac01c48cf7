"""Masked attention backward (Triton kernels + grid helpers only); tiles, masks and configs in attention.py.

With dout = ∂L/∂out and out = ξ·ctx: dctx = ξ·dout, and FA2's Δ_i = ⟨dctx_i, ctx_i⟩ = ⟨dout_i, out_i⟩ comes
from the one stored output. dS = P ∘ (ξ·dout vᵀ ∘ keep/(1−p) − Δ), dV = ξ·P̃ᵀ dout, dK = scale·dSᵀ Q,
dQ = scale·dS K, d bias = dS. The head-mask gradient is Σ_t r_t with r_t = ⟨dout_t, ctx_t⟩ = Δ_t / ξ; a
pruned head (ξ = 0) has out = 0, so its r_t comes from ctx recomputed from the saved lse (two GEMMs per
tile) and its q/k/v gradients are exact zeros. Padded query rows have out = 0 and no gradient.

Short sequences (T ≤ BLOCK_N, up to 256): ONE kernel, one program per (b, h) holding all keys in one tile:
for each query tile S = K Qᵀ, dP = V doutᵀ, dV += P̃ᵀ dout, dK += dSᵀ Q, dQ = dS K — FlashAttention-2's five
GEMMs — and Σ_t r_t, Σ_t |r_t| written per (b, h) directly. Longer sequences: a pre-pass (Δ, r partial sums
per query tile), then dK/dV per key tile and dQ per query tile (seven GEMMs, no atomics). Every sum has a
fixed order: repeated runs are bit-identical.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .attention import (INTERPRET, TUNING_KEY, allowed, block_d, dropout_keep, head_bases, head_scale, key_range,
                        program_head, prune, query_range, t_bucket, tile_configs)


@triton.jit
def _scores_t(k, q, n, q_idx, lse, BIAS, bias_off, L, bh, T, window, seed, dropout_p, qk_scale, s_bt, s_bs,
              HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr, PREC: tl.constexpr):
    """Pᵀ [N, M] (keys × queries, before dropout) from the saved lse."""
    st = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale
    if HAS_BIAS:
        bias = tl.load(BIAS + bias_off + q_idx[None, :] * s_bt + n[:, None] * s_bs,
                       mask=(q_idx[None, :] < T) & (n[:, None] < T), other=0.0)
        st += bias.to(tl.float32) * 1.4426950408889634
    ok = allowed(q_idx[None, :], n[:, None], L, window, WINDOWED)
    return tl.where(ok, tl.exp2(st - lse[None, :]), 0.0)


@triton.jit
def _grad_scores_t(pt, v, do, delta, xi, seed, bh, n, q_idx, T, dropout_p, DROPOUT: tl.constexpr, PREC: tl.constexpr):
    """(P̃ᵀ, dSᵀ) [N, M]: the dropped probabilities and the score gradient (before the softmax scale)."""
    dpt = tl.dot(v, tl.trans(do), input_precision=PREC) * xi
    pdt = pt
    if DROPOUT:
        keep = dropout_keep(seed, bh, q_idx[None, :], n[:, None], T, dropout_p)
        pdt = tl.where(keep, pt / (1.0 - dropout_p), 0.0)
        dpt = tl.where(keep, dpt / (1.0 - dropout_p), 0.0)
    return pdt, pt * (dpt - delta[None, :])


@triton.jit
def _pruned_head_r(
    Q, K, V, DOUT, LSE, BIAS, q_off, k_off, v_off, do_off, bias_off, L, bh, T, D, window, seed, dropout_p,
    qk_scale, m0, s_qt, s_kt, s_vt, s_dt, s_bt, s_bs,
    HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """r_t = ⟨dout_t, ctx_t⟩ [M] for query tile m0 of a head with ξ = 0: ctx recomputed from the saved lse."""
    q_idx = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    qmask = (q_idx[:, None] < L) & (offs_d[None, :] < D)
    q = tl.load(Q + q_off + q_idx[:, None] * s_qt + offs_d[None, :], mask=qmask, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * T + q_idx, mask=q_idx < L, other=0.0)
    ctx = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = key_range(m0, L, window, WINDOWED, BLOCK_M, BLOCK_N)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        kvmask = (n[:, None] < L) & (offs_d[None, :] < D)
        k = tl.load(K + k_off + n[:, None] * s_kt + offs_d[None, :], mask=kvmask, other=0.0)
        v = tl.load(V + v_off + n[:, None] * s_vt + offs_d[None, :], mask=kvmask, other=0.0)
        pt = _scores_t(k, q, n, q_idx, lse, BIAS, bias_off, L, bh, T, window, seed, dropout_p, qk_scale,
                       s_bt, s_bs, HAS_BIAS, WINDOWED, PREC)
        if DROPOUT:
            pt = tl.where(dropout_keep(seed, bh, q_idx[None, :], n[:, None], T, dropout_p), pt / (1.0 - dropout_p), 0.0)
        ctx += tl.dot(tl.trans(pt).to(v.dtype), v, input_precision=PREC)
    do = tl.load(DOUT + do_off + q_idx[:, None] * s_dt + offs_d[None, :], mask=qmask, other=0.0)
    return tl.sum(do.to(tl.float32) * ctx, 1)


@triton.jit
def _attn_bwd_fused(
    Q, K, V, DOUT, LSE, DQ, DK, DV, DBIAS, RSUM, RABS, SCALE, LENS, BIAS,
    sm_scale, seed, dropout_p, window, s_sb, s_sh,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_db, s_dh, s_dt, s_gb, s_gh, s_gt,
    s_bb, s_bh, s_bt, s_bs, s_xb, s_xh, s_xt, s_xs,
    H, T, D, T_BUCKET,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    WINDOWED: tl.constexpr, DROPOUT: tl.constexpr, NEED_QKV: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """The whole backward of one (b, h) with T ≤ BLOCK_N: every key in one tile, a loop over query tiles.

    With all keys in the tile, r_t = Σ_j P̃_tj (dout_t·v_j) = ⟨dout_t, ctx_t⟩ comes from the fp32 P and dP
    of this loop (no read of the output, exact for a pruned head too) and Δ_t = ξ·r_t."""
    bh, b, h, L = program_head(LENS, H, T, HAS_LENS)
    xi = head_scale(SCALE, b, h, s_sb, s_sh, HAS_SCALE)
    qk_scale = sm_scale * 1.4426950408889634
    q_off, do_off, g_off = head_bases(b, h, s_qb, s_qh), head_bases(b, h, s_db, s_dh), head_bases(b, h, s_gb, s_gh)
    bias_off, dbias_off = head_bases(b, h, s_bb, s_bh), head_bases(b, h, s_xb, s_xh)
    n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    kvmask = (n[:, None] < L) & dmask[None, :]
    k = tl.load(K + head_bases(b, h, s_kb, s_kh) + n[:, None] * s_kt + offs_d[None, :], mask=kvmask, other=0.0)
    v = tl.load(V + head_bases(b, h, s_vb, s_vh) + n[:, None] * s_vt + offs_d[None, :], mask=kvmask, other=0.0)
    r_acc = tl.zeros([BLOCK_M], dtype=tl.float32)  # Σ r_t per row slot, then one sum: a fixed order
    a_acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for m0 in range(0, L, BLOCK_M):
        q_idx = m0 + tl.arange(0, BLOCK_M)
        rows = (q_idx[:, None] < L) & dmask[None, :]
        q = tl.load(Q + q_off + q_idx[:, None] * s_qt + offs_d[None, :], mask=rows, other=0.0)
        do = tl.load(DOUT + do_off + q_idx[:, None] * s_dt + offs_d[None, :], mask=rows, other=0.0).to(v.dtype)
        lse = tl.load(LSE + bh.to(tl.int64) * T + q_idx, mask=q_idx < L, other=0.0)
        pt = _scores_t(k, q, n, q_idx, lse, BIAS, bias_off, L, bh, T, window, seed, dropout_p, qk_scale,
                       s_bt, s_bs, HAS_BIAS, WINDOWED, PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=PREC)  # dout_t · v_j, [N, M]
        pdt = pt
        if DROPOUT:
            keep = dropout_keep(seed, bh, q_idx[None, :], n[:, None], T, dropout_p)
            pdt = tl.where(keep, pt / (1.0 - dropout_p), 0.0)
            dpt = tl.where(keep, dpt / (1.0 - dropout_p), 0.0)
        r = tl.sum(pt * dpt, 0)  # = Σ_j P̃_tj (dout_t · v_j) = ⟨dout_t, ctx_t⟩
        r_acc += r
        a_acc += tl.abs(r)
        if NEED_QKV:
            dst = pt * (dpt - r[None, :]) * xi
            dv += tl.dot(pdt.to(v.dtype), do, input_precision=PREC)
            dk += tl.dot(dst.to(q.dtype), q, input_precision=PREC)
            dq = tl.dot(tl.trans(dst).to(k.dtype), k, input_precision=PREC) * sm_scale
            tl.store(DQ + g_off + q_idx[:, None] * s_gt + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                     mask=(q_idx[:, None] < T) & dmask[None, :])
            if BIAS_GRAD:
                tl.store(DBIAS + dbias_off + q_idx[None, :] * s_xt + n[:, None] * s_xs,
                         dst.to(DBIAS.dtype.element_ty), mask=(q_idx[None, :] < T) & (n[:, None] < T))
    tl.store(RSUM + bh, tl.sum(r_acc, 0))
    tl.store(RABS + bh, tl.sum(a_acc, 0))
    if NEED_QKV:
        _store_key_grads_and_padding(DQ, DK, DV, g_off, s_gt, dk * sm_scale, dv * xi, L, T, D, BLOCK_M, BLOCK_N, BLOCK_D)


@triton.jit
def _store_key_grads_and_padding(DQ, DK, DV, g_off, s_gt, dk, dv, L, T, D,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """The fused kernel's tail: dk, dv of every key row (zeros for padded keys), zeros for dq's padded tiles."""
    n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    kvrows = (n[:, None] < T) & dmask[None, :]
    tl.store(DK + g_off + n[:, None] * s_gt + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kvrows)
    tl.store(DV + g_off + n[:, None] * s_gt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kvrows)
    for m0 in range(tl.cdiv(L, BLOCK_M) * BLOCK_M, T, BLOCK_M):  # query tiles of padding: zeros
        q_idx = m0 + tl.arange(0, BLOCK_M)
        tl.store(DQ + g_off + q_idx[:, None] * s_gt + offs_d[None, :],
                 tl.zeros([BLOCK_M, BLOCK_D], dtype=DQ.dtype.element_ty), mask=(q_idx[:, None] < T) & dmask[None, :])


# ------------------------------------------------------------------------------ long sequences: three kernels


@triton.jit
def _attn_bwd_prep(
    Q, K, V, OUT, DOUT, LSE, DELTA, RSUM, RABS, SCALE, LENS, BIAS,
    sm_scale, seed, dropout_p, window, s_sb, s_sh,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, s_db, s_dh, s_dt, s_bb, s_bh, s_bt, s_bs,
    H, T, D, NUM_M,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr,
    DROPOUT: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One query tile: Δ_t = ⟨dout_t, out_t⟩ per row, and this tile's Σ r_t, Σ |r_t| (r_t = Δ_t / ξ)."""
    bh, b, h, L = program_head(LENS, H, T, HAS_LENS)
    pid_m = tl.program_id(1)
    q_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = (q_idx[:, None] < T) & (offs_d[None, :] < D)
    do = tl.load(DOUT + head_bases(b, h, s_db, s_dh) + q_idx[:, None] * s_dt + offs_d[None, :], mask=rows, other=0.0)
    o = tl.load(OUT + head_bases(b, h, s_ob, s_oh) + q_idx[:, None] * s_ot + offs_d[None, :], mask=rows, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * T + q_idx, delta, mask=q_idx < T)
    r = delta
    if HAS_SCALE:
        xi = tl.load(SCALE + b * s_sb + h * s_sh).to(tl.float32)
        if xi == 0.0:
            r = tl.zeros([BLOCK_M], dtype=tl.float32)
            if pid_m * BLOCK_M < L:
                r = _pruned_head_r(Q, K, V, DOUT, LSE, BIAS, head_bases(b, h, s_qb, s_qh), head_bases(b, h, s_kb, s_kh),
                                   head_bases(b, h, s_vb, s_vh), head_bases(b, h, s_db, s_dh), head_bases(b, h, s_bb, s_bh),
                                   L, bh, T, D, window, seed, dropout_p, sm_scale * 1.4426950408889634, pid_m * BLOCK_M,
                                   s_qt, s_kt, s_vt, s_dt, s_bt, s_bs, HAS_BIAS, WINDOWED, DROPOUT, PREC,
                                   BLOCK_M, BLOCK_N, BLOCK_D)
        else:
            r = delta / xi
    tl.store(RSUM + bh.to(tl.int64) * NUM_M + pid_m, tl.sum(r, 0))
    tl.store(RABS + bh.to(tl.int64) * NUM_M + pid_m, tl.sum(tl.abs(r), 0))


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DOUT, LSE, DELTA, DK, DV, SCALE, LENS, BIAS,
    sm_scale, seed, dropout_p, window, s_sb, s_sh,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_db, s_dh, s_dt, s_gb, s_gh, s_gt, s_bb, s_bh, s_bt, s_bs,
    H, T, D, T_BUCKET,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr,
    DROPOUT: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One key tile: dV = ξ Σ_i P̃ᵀ dout_i, dK = scale Σ_i dSᵀ q_i over the queries that may attend it."""
    bh, b, h, L = program_head(LENS, H, T, HAS_LENS)
    xi = head_scale(SCALE, b, h, s_sb, s_sh, HAS_SCALE)
    n0 = tl.program_id(1) * BLOCK_N
    q_off, do_off, bias_off = head_bases(b, h, s_qb, s_qh), head_bases(b, h, s_db, s_dh), head_bases(b, h, s_bb, s_bh)
    n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    kvmask = (n[:, None] < L) & dmask[None, :]
    k = tl.load(K + head_bases(b, h, s_kb, s_kh) + n[:, None] * s_kt + offs_d[None, :], mask=kvmask, other=0.0)
    v = tl.load(V + head_bases(b, h, s_vb, s_vh) + n[:, None] * s_vt + offs_d[None, :], mask=kvmask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, hi = query_range(n0, L, window, WINDOWED, BLOCK_M, BLOCK_N)
    for m0 in range(lo, hi, BLOCK_M):
        q_idx = m0 + tl.arange(0, BLOCK_M)
        rows = (q_idx[:, None] < T) & dmask[None, :]
        q = tl.load(Q + q_off + q_idx[:, None] * s_qt + offs_d[None, :], mask=rows, other=0.0)
        do = tl.load(DOUT + do_off + q_idx[:, None] * s_dt + offs_d[None, :], mask=rows, other=0.0).to(v.dtype)
        lse = tl.load(LSE + bh.to(tl.int64) * T + q_idx, mask=q_idx < L, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * T + q_idx, mask=q_idx < T, other=0.0)
        pt = _scores_t(k, q, n, q_idx, lse, BIAS, bias_off, L, bh, T, window, seed, dropout_p,
                       sm_scale * 1.4426950408889634, s_bt, s_bs, HAS_BIAS, WINDOWED, PREC)
        pdt, dst = _grad_scores_t(pt, v, do, delta, xi, seed, bh, n, q_idx, T, dropout_p, DROPOUT, PREC)
        dv += tl.dot(pdt.to(v.dtype), do, input_precision=PREC)
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PREC)
    rows_n = (n[:, None] < T) & dmask[None, :]
    g_off = head_bases(b, h, s_gb, s_gh) + n[:, None] * s_gt + offs_d[None, :]
    tl.store(DK + g_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=rows_n)
    tl.store(DV + g_off, (dv * xi).to(DV.dtype.element_ty), mask=rows_n)


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DOUT, LSE, DELTA, DQ, DBIAS, SCALE, LENS, BIAS,
    sm_scale, seed, dropout_p, window, s_sb, s_sh,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_db, s_dh, s_dt, s_gb, s_gh, s_gt,
    s_bb, s_bh, s_bt, s_bs, s_xb, s_xh, s_xt, s_xs,
    H, T, D, T_BUCKET,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    WINDOWED: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One query tile: dQ = scale Σ_j dS k_j over its keys (and d bias = dS); zeros for padded query tiles."""
    bh, b, h, L = program_head(LENS, H, T, HAS_LENS)
    xi = head_scale(SCALE, b, h, s_sb, s_sh, HAS_SCALE)
    m0 = tl.program_id(1) * BLOCK_M
    k_off, v_off, bias_off = head_bases(b, h, s_kb, s_kh), head_bases(b, h, s_vb, s_vh), head_bases(b, h, s_bb, s_bh)
    q_idx = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    rows = (q_idx[:, None] < T) & dmask[None, :]
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if m0 < L:
        q = tl.load(Q + head_bases(b, h, s_qb, s_qh) + q_idx[:, None] * s_qt + offs_d[None, :], mask=rows, other=0.0)
        do = tl.load(DOUT + head_bases(b, h, s_db, s_dh) + q_idx[:, None] * s_dt + offs_d[None, :], mask=rows,
                     other=0.0).to(q.dtype)
        lse = tl.load(LSE + bh.to(tl.int64) * T + q_idx, mask=q_idx < L, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * T + q_idx, mask=q_idx < T, other=0.0)
        lo, hi = key_range(m0, L, window, WINDOWED, BLOCK_M, BLOCK_N)
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            kvmask = (n[:, None] < L) & dmask[None, :]
            k = tl.load(K + k_off + n[:, None] * s_kt + offs_d[None, :], mask=kvmask, other=0.0)
            v = tl.load(V + v_off + n[:, None] * s_vt + offs_d[None, :], mask=kvmask, other=0.0)
            pt = _scores_t(k, q, n, q_idx, lse, BIAS, bias_off, L, bh, T, window, seed, dropout_p,
                           sm_scale * 1.4426950408889634, s_bt, s_bs, HAS_BIAS, WINDOWED, PREC)
            _, dst = _grad_scores_t(pt, v, do, delta, xi, seed, bh, n, q_idx, T, dropout_p, DROPOUT, PREC)
            dq += tl.dot(tl.trans(dst).to(k.dtype), k, input_precision=PREC)
            if BIAS_GRAD:
                tl.store(DBIAS + head_bases(b, h, s_xb, s_xh) + q_idx[None, :] * s_xt + n[:, None] * s_xs,
                         dst.to(DBIAS.dtype.element_ty), mask=(q_idx[None, :] < T) & (n[:, None] < T))
    tl.store(DQ + head_bases(b, h, s_gb, s_gh) + q_idx[:, None] * s_gt + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=rows)


# ------------------------------------------------------------------------------- configurations and grids

def use_fused(seq: int, dim: int, dropout: bool = False) -> bool:
    """The one-kernel backward when every key of a head fits one tile: T ≤ 256 at D ≤ 64, T ≤ 128 at D = 64
    with dropout (the RNG's registers would spill at 256); D > 64 and longer T take the three kernels."""
    tile = t_bucket(seq) * block_d(dim)
    return t_bucket(seq) <= 256 and block_d(dim) <= 64 and tile <= (128 * 64 if dropout else 256 * 64)


# T bucket -> (BLOCK_M, warps) tried by the fused kernel; BLOCK_N is the bucket. LEAN_ONLY spills with
# dropout, a window, a bias or fp32 inputs: it serves the plain 16-bit importance / fine-tuning call only.
FUSED_TABLE = {16: [(16, 4)], 32: [(16, 4), (32, 4)], 64: [(32, 4), (64, 4)], 128: [(64, 8), (32, 8), (16, 8)],
               256: [(16, 8)]}
LEAN_ONLY = {(64, 64, 4), (128, 64, 8)}  # (bucket, BLOCK_M, warps)


def _fused_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64}, num_warps=1, num_stages=1)]
    pairs = sorted({p for table in FUSED_TABLE.values() for p in table})
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=1) for m, w in pairs]


def prune_fused(configs, named_args, **kwargs):
    bucket = named_args["T_BUCKET"]
    q = named_args.get("Q")
    lean = not any(kwargs.get(f) for f in ("DROPOUT", "WINDOWED", "HAS_BIAS")) and \
        not str(getattr(q, "dtype", q)).endswith("float32")  # a tensor, or a dtype when only compiling
    wanted = [(m, w) for m, w in FUSED_TABLE[bucket] if lean or (bucket, m, w) not in LEAN_ONLY]
    kept = [c for c in configs if (c.kwargs["BLOCK_M"], c.num_warps) in wanted]
    return kept or configs[:1]


# the long path: program tile × inner tile that spill in no variant at D = 64 (test_sm90_compile)
DKDV_CONFIGS = tile_configs([(32, 128, 8, 2), (64, 64, 8, 2), (32, 64, 4, 2)])  # BLOCK_N keys per program
DQ_CONFIGS = tile_configs([(128, 32, 8, 2), (64, 32, 4, 2), (32, 128, 8, 2)])  # BLOCK_M queries per program
PREP = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4)
FUSED_KEY = TUNING_KEY + ["NEED_QKV", "BIAS_GRAD"]

attn_bwd_fused = triton.autotune(_fused_configs(), key=FUSED_KEY, prune_configs_by={"early_config_prune": prune_fused})(
    _attn_bwd_fused)
attn_bwd_prep = _attn_bwd_prep  # cheap and memory-bound: one fixed configuration (PREP)
attn_bwd_dkdv = triton.autotune(DKDV_CONFIGS, key=TUNING_KEY, prune_configs_by={"early_config_prune": prune})(_attn_bwd_dkdv)
attn_bwd_dq = triton.autotune(DQ_CONFIGS, key=TUNING_KEY + ["BIAS_GRAD"], prune_configs_by={"early_config_prune": prune})(
    _attn_bwd_dq)


def prep_grid(batch_heads: int, seq: int) -> tuple[int, int]:
    return (batch_heads, triton.cdiv(seq, PREP["BLOCK_M"]))


def dkdv_grid(batch_heads: int, seq: int):
    return lambda meta: (batch_heads, triton.cdiv(seq, meta["BLOCK_N"]))


def dq_grid(batch_heads: int, seq: int):
    return lambda meta: (batch_heads, triton.cdiv(seq, meta["BLOCK_M"]))
