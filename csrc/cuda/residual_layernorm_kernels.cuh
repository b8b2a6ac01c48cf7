// Device kernels of the CUDA residual LayerNorm (csrc/cuda/residual_layernorm.cu holds the host side). No
// ATen here: tests/ops/test_build.py compiles this header alone with nvcc (sm_80, sm_90) where one is found.
#pragma once

#include <cstdint>

namespace fastticket {
namespace cuda {

constexpr int kThreads = 256;

// Sum over the block (blockDim.x == kThreads) in a fixed order; every thread gets the result.
__device__ float block_sum(float v, float* shm) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // shm may still be read by a previous call
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? shm[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void rln_fwd_kernel(const float* __restrict__ x, const float* __restrict__ res, const float* __restrict__ scale,
                               const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
                               float* __restrict__ mean_out, float* __restrict__ rstd_out, int64_t T, int64_t C, float eps) {
  __shared__ float shm[32];
  const int64_t n = blockIdx.x;
  const float s = scale ? scale[n / T] : 1.0f;
  const float* xr = x + n * C;
  const float* rr = res + n * C;
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += kThreads) sum += s * xr[j] + rr[j];
  const float mean = block_sum(sum, shm) / (float)C;
  float sq = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += kThreads) {
    const float d = s * xr[j] + rr[j] - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum(sq, shm) / (float)C + eps);
  for (int64_t j = threadIdx.x; j < C; j += kThreads) y[n * C + j] = (s * xr[j] + rr[j] - mean) * rstd * w[j] + bias[j];
  if (threadIdx.x == 0) {
    mean_out[n] = mean;
    rstd_out[n] = rstd;
  }
}

__global__ void rln_bwd_rows_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ res,
                                    const float* __restrict__ scale, const float* __restrict__ w,
                                    const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                    float* __restrict__ dx, float* __restrict__ dres, float* __restrict__ r_out, int64_t T,
                                    int64_t C) {
  __shared__ float shm[32];
  const int64_t n = blockIdx.x;
  const float s = scale ? scale[n / T] : 1.0f;
  const float mean = mean_in[n], rstd = rstd_in[n];
  const float *g = dy + n * C, *xr = x + n * C, *rr = res + n * C;
  float a = 0.0f, c = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += kThreads) {
    const float zh = (s * xr[j] + rr[j] - mean) * rstd;
    const float gw = g[j] * w[j];
    a += gw;
    c += gw * zh;
  }
  a = block_sum(a, shm) / (float)C;
  c = block_sum(c, shm) / (float)C;
  float r = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += kThreads) {
    const float zh = (s * xr[j] + rr[j] - mean) * rstd;
    const float dz = rstd * (g[j] * w[j] - a - zh * c);
    dx[n * C + j] = s * dz;
    dres[n * C + j] = dz;
    r += dz * xr[j];
  }
  r = block_sum(r, shm);
  if (threadIdx.x == 0) r_out[n] = r;
}

// The per-example mask-gradient reduction: r_sum[b] = sum_t r[b, t], r_abs[b] = sum_t |r[b, t]|.
__global__ void mask_grad_reduce_kernel(const float* __restrict__ r, float* __restrict__ r_sum, float* __restrict__ r_abs,
                                        int64_t T) {
  __shared__ float shm[32];
  const int64_t b = blockIdx.x;
  float s = 0.0f, a = 0.0f;
  for (int64_t t = threadIdx.x; t < T; t += kThreads) {
    const float v = r[b * T + t];
    s += v;
    a += fabsf(v);
  }
  s = block_sum(s, shm);
  a = block_sum(a, shm);
  if (threadIdx.x == 0) {
    r_sum[b] = s;
    r_abs[b] = a;
  }
}

constexpr int kColTile = 32;     // columns per block (one warp row: coalesced loads)
constexpr int kRowLanes = 8;     // rows read side by side per block
constexpr int kChunkRows = 128;  // rows per partial sum

// Partial column sums of dy * zhat and dy over rows [chunk * kChunkRows, +kChunkRows): grid (column tiles,
// chunks), block (kColTile, kRowLanes); lane y takes rows y, y + kRowLanes, ... of the chunk in order.
__global__ void rln_bwd_cols_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* __restrict__ res, const float* __restrict__ scale,
                                            const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                            float* __restrict__ part_w, float* __restrict__ part_b, int64_t N,
                                            int64_t T, int64_t C) {
  __shared__ float shw[kRowLanes][kColTile];
  __shared__ float shb[kRowLanes][kColTile];
  const int64_t j = (int64_t)blockIdx.x * kColTile + threadIdx.x;
  const int64_t first = (int64_t)blockIdx.y * kChunkRows;
  float aw = 0.0f, ab = 0.0f;
  if (j < C) {
    for (int64_t n = first + threadIdx.y; n < first + kChunkRows && n < N; n += kRowLanes) {
      const float s = scale ? scale[n / T] : 1.0f;
      const float zh = (s * x[n * C + j] + res[n * C + j] - mean_in[n]) * rstd_in[n];
      const float g = dy[n * C + j];
      aw += g * zh;
      ab += g;
    }
  }
  shw[threadIdx.y][threadIdx.x] = aw;
  shb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && j < C) {
    float w = 0.0f, b = 0.0f;
    for (int y = 0; y < kRowLanes; ++y) {
      w += shw[y][threadIdx.x];
      b += shb[y][threadIdx.x];
    }
    part_w[(int64_t)blockIdx.y * C + j] = w;
    part_b[(int64_t)blockIdx.y * C + j] = b;
  }
}

// dweight[j] = sum over chunks of part_w[chunk, j] (chunks in order); dbias alike.
__global__ void rln_bwd_cols_final_kernel(const float* __restrict__ part_w, const float* __restrict__ part_b,
                                          float* __restrict__ dw, float* __restrict__ db, int64_t chunks, int64_t C) {
  const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;
  float w = 0.0f, b = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) {
    w += part_w[c * C + j];
    b += part_b[c * C + j];
  }
  dw[j] = w;
  db[j] = b;
}

}  // namespace cuda
}  // namespace fastticket
