// masked_residual_layernorm on CUDA (fp32 compute; built only when torch has CUDA; UNTESTED in this
// repository's CI, which has no GPU). Semantics as csrc/cpu/residual_layernorm.cpp:
//   forward : y = LayerNorm(s_b x + residual) w + b, mean/rstd per row saved;
//   backward: dz, dx = s_b dz, dresidual = dz, r_t = <dz_t, x_t> per row; then the mask-gradient
//             reduction r_sum[b] = sum_t r_t, r_abs[b] = sum_t |r_t| (one block per example) and dweight /
//             dbias as column sums over the whole GPU: blocks of 32 columns x kChunkRows rows write partial
//             sums (8 row lanes per column, combined in shared memory in a fixed order), one pass adds the
//             chunks in order. Fixed block sizes and reduction trees: no atomics, bit-identical repeats.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace fastticket {
namespace cuda {
namespace {

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

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kFloat, "fastticket::rln (cuda): ", name, " must be a float32 CUDA tensor");
}

const float* opt_ptr(const c10::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value() || !t->defined()) return nullptr;
  check(*t, "scale");
  keep = t->contiguous();
  return keep.data_ptr<float>();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rln_fwd_cuda(const at::Tensor& x_in, const at::Tensor& res_in,
                                                            const c10::optional<at::Tensor>& scale, const at::Tensor& w_in,
                                                            const at::Tensor& b_in, double eps) {
  check(x_in, "x");
  check(res_in, "residual");
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous(), res = res_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous(), s_keep;
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T;
  at::Tensor y = at::empty_like(x), mean = at::empty({B, T}, x.options()), rstd = at::empty({B, T}, x.options());
  const float* sp = opt_ptr(scale, s_keep);
  if (N > 0) {
    rln_fwd_kernel<<<(unsigned)N, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<float>(), res.data_ptr<float>(), sp, w.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(),
        mean.data_ptr<float>(), rstd.data_ptr<float>(), T, C, (float)eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rln_bwd_cuda(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& res_in, const c10::optional<at::Tensor>& scale,
    const at::Tensor& w_in, const at::Tensor& mean_in, const at::Tensor& rstd_in) {
  check(dy_in, "dy");
  check(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor dy = dy_in.contiguous(), x = x_in.contiguous(), res = res_in.contiguous(), w = w_in.contiguous();
  at::Tensor mean = mean_in.contiguous(), rstd = rstd_in.contiguous(), s_keep;
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T;
  at::Tensor dx = at::empty_like(x), dres = at::empty_like(x), r = at::empty({std::max<int64_t>(N, 1)}, x.options());
  at::Tensor dw = at::zeros({C}, x.options()), db = at::zeros({C}, x.options());
  at::Tensor r_sum = at::zeros({B}, x.options()), r_abs = at::zeros({B}, x.options());
  const float* sp = opt_ptr(scale, s_keep);
  auto stream = at::cuda::getCurrentCUDAStream();
  if (N > 0) {
    rln_bwd_rows_kernel<<<(unsigned)N, kThreads, 0, stream>>>(
        dy.data_ptr<float>(), x.data_ptr<float>(), res.data_ptr<float>(), sp, w.data_ptr<float>(), mean.data_ptr<float>(),
        rstd.data_ptr<float>(), dx.data_ptr<float>(), dres.data_ptr<float>(), r.data_ptr<float>(), T, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    mask_grad_reduce_kernel<<<(unsigned)B, kThreads, 0, stream>>>(r.data_ptr<float>(), r_sum.data_ptr<float>(),
                                                                   r_abs.data_ptr<float>(), T);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t chunks = (N + kChunkRows - 1) / kChunkRows;
    at::Tensor part_w = at::empty({chunks, C}, x.options()), part_b = at::empty({chunks, C}, x.options());
    const dim3 grid((unsigned)((C + kColTile - 1) / kColTile), (unsigned)chunks), block(kColTile, kRowLanes);
    rln_bwd_cols_partial_kernel<<<grid, block, 0, stream>>>(
        dy.data_ptr<float>(), x.data_ptr<float>(), res.data_ptr<float>(), sp, mean.data_ptr<float>(),
        rstd.data_ptr<float>(), part_w.data_ptr<float>(), part_b.data_ptr<float>(), N, T, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    rln_bwd_cols_final_kernel<<<(unsigned)((C + 255) / 256), 256, 0, stream>>>(
        part_w.data_ptr<float>(), part_b.data_ptr<float>(), dw.data_ptr<float>(), db.data_ptr<float>(), chunks, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {dx, dres, dw, db, r_sum, r_abs};
}

TORCH_LIBRARY_IMPL(fastticket, CUDA, m) {
  m.impl("rln_fwd", &rln_fwd_cuda);
  m.impl("rln_bwd", &rln_bwd_cuda);
}

}  // namespace cuda
}  // namespace fastticket
