"""Masked attention, FlashAttention-2 style: the forward kernel, the tile helpers every attention kernel
shares, and the launch configurations (Triton kernels + grid helpers only; the backward is in
attention_backward.py).

I/O: q, k, v are read through their strides (views of the projection output, [B, T, H, D] memory read as
[B, H, T, D]; only the last dim must be contiguous); the output is written through its strides too, so the
caller allocates it [B, T, H, D] and the model's transpose + reshape costs nothing. One output write:
out = ξ·ctx (ξ the per-(b, h) head scale); the backward recovers what it needs from out (attention_backward).

Masks: key j is attended by query i when j < L (the example's length, right padding) and, with a window w,
|i − j| ≤ w; attn_bias (any strides, broadcast dims with stride 0) is added to the scaled scores. Rows i ≥ L
(padded queries) are written as exact zeros, and query tiles that lie wholly in the padding are not
computed at all; with a window only the key tiles that meet the band are visited.

Dropout: a counter-based RNG (Philox, tl.rand) keyed by (seed, ((b·H + h)·T + query)·T + key); the backward
regenerates the same mask. DROPOUT is a constexpr, so p = 0 compiles a kernel without RNG.

Launch: B·H on grid axis 0 (2^31 − 1 programs), query tiles on axis 1 (65,535). Configurations are
autotuned per (T bucket, D, dtype, variant); under TRITON_INTERPRET=1 there is one small configuration
(no tuning runs), as the interpreter executes every program in Python.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# ------------------------------------------------------------------------------------- shared tile helpers


@triton.jit
def allowed(q_idx, k_idx, L, window, WINDOWED: tl.constexpr):
    """Which (query, key) pairs attend: broadcastable index tensors ([M, 1] × [1, N] or transposed)."""
    ok = (q_idx < L) & (k_idx < L)
    if WINDOWED:
        ok = ok & (tl.abs(q_idx - k_idx) <= window)
    return ok


@triton.jit
def dropout_keep(seed, bh, q_idx, k_idx, T, dropout_p):
    """The dropout keep mask for broadcastable query / key indices (same counters in either layout)."""
    counter = (bh.to(tl.int64) * T + q_idx.to(tl.int64)) * T + k_idx.to(tl.int64)
    return tl.rand(seed, counter) >= dropout_p


@triton.jit
def key_range(m0, L, window, WINDOWED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi): the keys that queries m0 … m0 + BLOCK_M − 1 may attend, lo a multiple of BLOCK_N."""
    lo = 0
    hi = L
    if WINDOWED:
        lo = (tl.maximum(m0 - window, 0) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(L, m0 + BLOCK_M + window)
    return lo, hi


@triton.jit
def query_range(n0, L, window, WINDOWED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi): the real queries that keys n0 … n0 + BLOCK_N − 1 may be attended by, lo a multiple of
    BLOCK_M; empty for a tile of padded keys."""
    lo = 0
    hi = tl.where(n0 < L, L, 0)
    if WINDOWED:
        lo = (tl.maximum(n0 - window, 0) // BLOCK_M) * BLOCK_M
        hi = tl.where(n0 < L, tl.minimum(L, n0 + BLOCK_N + window), 0)
    return lo, hi


@triton.jit
def head_bases(b, h, s_b, s_h):
    return b.to(tl.int64) * s_b + h.to(tl.int64) * s_h


@triton.jit
def program_head(LENS, H, T, HAS_LENS: tl.constexpr):
    """(bh, b, h, L) of this program (B·H on grid axis 0); L: the example's length (T without lengths)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    L = T
    if HAS_LENS:
        L = tl.minimum(tl.load(LENS + b), T).to(tl.int32)
    return bh, b, h, L


@triton.jit
def head_scale(SCALE, b, h, s_sb, s_sh, HAS_SCALE: tl.constexpr):
    """ξ of head (b, h) in fp32; 1 without head scales."""
    xi = 1.0
    if HAS_SCALE:
        xi = tl.load(SCALE + b * s_sb + h * s_sh).to(tl.float32)
    return xi


# ------------------------------------------------------------------------------------------------ forward


@triton.jit
def _attn_fwd_rows(
    q, m0, k_base, v_base, BIAS, bias_off, L, bh, T, D, window, seed, dropout_p, qk_scale,
    s_kt, s_vt, s_bt, s_bs,
    HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr, DROPOUT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Online softmax of one query tile over its keys: (acc = Σ_j P̃_ij v_j unnormalized, m, l) in base 2."""
    q_idx = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = key_range(m0, L, window, WINDOWED, BLOCK_M, BLOCK_N)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + offs_n
        kt = tl.load(k_base + n[None, :] * s_kt + offs_d[:, None], mask=(n[None, :] < L) & dmask[:, None], other=0.0)
        v = tl.load(v_base + n[:, None] * s_vt + offs_d[None, :], mask=(n[:, None] < L) & dmask[None, :], other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * qk_scale
        if HAS_BIAS:
            bias = tl.load(BIAS + bias_off + q_idx[:, None] * s_bt + n[None, :] * s_bs,
                           mask=(q_idx[:, None] < T) & (n[None, :] < T), other=0.0)
            s += bias.to(tl.float32) * 1.4426950408889634
        s = tl.where(allowed(q_idx[:, None], n[None, :], L, window, WINDOWED), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: nothing to rescale
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            p = tl.where(dropout_keep(seed, bh, q_idx[:, None], n[None, :], T, dropout_p), p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(
    Q, K, V, OUT, LSE, SCALE, LENS, BIAS,
    sm_scale, seed, dropout_p, window, s_sb, s_sh,
    s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, s_bb, s_bh, s_bt, s_bs,
    H, T, D, T_BUCKET,
    HAS_SCALE: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, WINDOWED: tl.constexpr,
    DROPOUT: tl.constexpr, STORE_LSE: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One query tile of one (b, h): out = ξ · softmax(q kᵀ·scale + bias, masked) v, lse (base 2) if kept."""
    bh, b, h, L = program_head(LENS, H, T, HAS_LENS)
    m0 = tl.program_id(1) * BLOCK_M
    q_idx = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    omask = (q_idx[:, None] < T) & (offs_d[None, :] < D)
    o_ptrs = OUT + head_bases(b, h, s_ob, s_oh) + q_idx[:, None] * s_ot + offs_d[None, :]
    if m0 < L:
        q = tl.load(Q + head_bases(b, h, s_qb, s_qh) + q_idx[:, None] * s_qt + offs_d[None, :], mask=omask, other=0.0)
        acc, m_i, l_i = _attn_fwd_rows(
            q, m0, K + head_bases(b, h, s_kb, s_kh), V + head_bases(b, h, s_vb, s_vh),
            BIAS, head_bases(b, h, s_bb, s_bh), L, bh, T, D, window, seed, dropout_p, sm_scale * 1.4426950408889634,
            s_kt, s_vt, s_bt, s_bs, HAS_BIAS, WINDOWED, DROPOUT, PREC, BLOCK_M, BLOCK_N, BLOCK_D)
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        out = tl.where(q_idx[:, None] < L, acc / l_safe[:, None], 0.0)
        if HAS_SCALE:
            out = out * tl.load(SCALE + b * s_sb + h * s_sh).to(tl.float32)
        tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=omask)
        if STORE_LSE:
            tl.store(LSE + bh.to(tl.int64) * T + q_idx, m_i + tl.log2(l_safe), mask=q_idx < T)
    else:  # a tile of padded queries: zeros, nothing computed
        tl.store(o_ptrs, tl.zeros([BLOCK_M, BLOCK_D], dtype=OUT.dtype.element_ty), mask=omask)


# ------------------------------------------------------------------------------- configurations and grids


def block_d(dim: int) -> int:
    """The padded head dim: the next power of two, at least 16 (tl.dot's smallest K)."""
    return max(16, triton.next_power_of_2(dim))


def t_bucket(seq: int) -> int:
    """The autotuning key for T: its next power of two (a new length in the same bucket reuses the tuning)."""
    return max(16, triton.next_power_of_2(seq))


def _fits(cfg: triton.Config, bucket: int) -> bool:
    tiles = (cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"])
    return max(tiles) <= bucket and max(tiles) >= min(bucket, 64)


def prune(configs, named_args, **kwargs):
    """The configs for this T bucket: no tile beyond the bucket, and from 64 on a tile of at least 64 (small
    tiles serve short sequences only); at least one."""
    kept = [c for c in configs if _fits(c, named_args["T_BUCKET"])]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def tile_configs(shapes):
    if INTERPRET:  # one configuration: no tuning runs; 64-row tiles are the interpreter's fastest
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


# (BLOCK_M, BLOCK_N, warps, stages): none spills at sm_90 with dropout, window, bias or fp32 (TF32) at D = 64
# (test_sm90_compile); (128, 128) and (64, 128) do with dropout's RNG. 16/32-row tiles serve short sequences.
FWD_CONFIGS = tile_configs([(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 8, 2), (32, 32, 4, 1), (16, 16, 4, 1)])
TUNING_KEY = ["T_BUCKET", "D", "HAS_BIAS", "WINDOWED", "DROPOUT"]

attn_fwd = triton.autotune(FWD_CONFIGS, key=TUNING_KEY, prune_configs_by={"early_config_prune": prune})(_attn_fwd)


def fwd_grid(batch_heads: int, seq: int):
    return lambda meta: (batch_heads, triton.cdiv(seq, meta["BLOCK_M"]))
