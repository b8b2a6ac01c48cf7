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

#include "cuda/residual_layernorm_kernels.cuh"

namespace fastticket {
namespace cuda {
namespace {

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
