"""Head-table projections: GEMMs that read (and write gradients to) only the live heads' weight slices.

Ticket sharing keeps one weight per projection for all tasks (the union of their tickets); a batch of task i
uses only task i's heads. A head table `HEADS` (int32 [h], positions in the weight's head layout) maps the
live width n' ∈ [0, h·D) to the weight's row/column g(n') = HEADS[n' // D]·D + n' % D. One kernel covers
the six GEMMs of the forward and backward of both projection kinds:

    C[m(i), n(j)] = Σ_k A[i, k] · B[k(k), n(j)]  (+ bias[n(j)])

where exactly one of k(·), n(·) (the reads of B) or m(·), n(·) (the writes of C) goes through the head table
(GATHER_K / GATHER_N / SCATTER_M / SCATTER_N). Each program owns one [BLOCK_M, BLOCK_N] tile of C and
reduces over all of K itself: no atomics, repeated runs are bit-identical. Weight-gradient launches write
only the live rows/columns; the rest of the (zero-filled) gradient buffer is never touched.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _table(HEADS, idx, HEAD_DIM: tl.constexpr):
    """g(idx) = HEADS[idx // D]·D + idx % D (int64)."""
    head = tl.load(HEADS + idx // HEAD_DIM).to(tl.int64)
    return head * HEAD_DIM + (idx % HEAD_DIM)


@triton.jit
def gathered_mm(
    A, B, C, BIAS, HEADS,
    M, N, K,
    s_am, s_ak, s_bk, s_bn, s_cm, s_cn,
    HEAD_DIM: tl.constexpr,
    GATHER_K: tl.constexpr, GATHER_N: tl.constexpr, SCATTER_M: tl.constexpr, SCATTER_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mmask = offs_m < M
    nmask = offs_n < N
    if GATHER_N:  # B's (and the bias') column through the head table
        b_cols = _table(HEADS, tl.where(nmask, offs_n, 0), HEAD_DIM)
    else:
        b_cols = offs_n.to(tl.int64)
    a_rows = A + offs_m.to(tl.int64)[:, None] * s_am
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start_k in range(0, K, BLOCK_K):
        k = start_k + offs_k
        kmask = k < K
        if GATHER_K:  # B's row through the head table
            b_rows = _table(HEADS, tl.where(kmask, k, 0), HEAD_DIM)
        else:
            b_rows = k.to(tl.int64)
        a = tl.load(a_rows + k.to(tl.int64)[None, :] * s_ak, mask=mmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(B + b_rows[:, None] * s_bk + b_cols[None, :] * s_bn, mask=kmask[:, None] & nmask[None, :], other=0.0)
        acc += tl.dot(a, b, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(BIAS + b_cols, mask=nmask, other=0.0).to(tl.float32)[None, :]
    if SCATTER_M:
        c_rows = _table(HEADS, tl.where(mmask, offs_m, 0), HEAD_DIM)
    else:
        c_rows = offs_m.to(tl.int64)
    if SCATTER_N:
        c_cols = _table(HEADS, tl.where(nmask, offs_n, 0), HEAD_DIM)
    else:
        c_cols = offs_n.to(tl.int64)
    tl.store(C + c_rows[:, None] * s_cm + c_cols[None, :] * s_cn, acc.to(C.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


def block_sizes(interpret: bool) -> dict:
    """Tile sizes: small under the interpreter (tests), tensor-core sized on a GPU."""
    if interpret:
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1)
    return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4)


def grid(m: int, n: int, cfg: dict) -> tuple[int, int]:
    return (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
