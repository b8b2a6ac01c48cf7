// masked_residual_layernorm on CPU: y = LayerNorm(s_b * x + residual) * w + b, one row (b, t) at a time,
// parallel over rows. Backward emits dx = s_b dz, dresidual = dz, r_t = <dz_t, x_t> (per-example mask
// gradient sum_t r_t and probe sum_t |r_t|), and dweight / dbias reduced over fixed 32-row chunks in a
// fixed order: bit-identical across runs and thread counts, no atomics.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/kernels.h"

namespace fastticket {
namespace cpu {
namespace {

constexpr int64_t kRowsPerChunk = 32;

FT_CLONES void ln_row_fwd(const float* x, const float* res, float s, const float* w, const float* bi, float* y,
                          int64_t C, float eps, float* mean_out, float* rstd_out) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < C; ++j) sum += s * x[j] + res[j];
  const float mean = sum / (float)C;
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < C; ++j) {
    const float d = s * x[j] + res[j] - mean;
    sq += d * d;
  }
  const float rstd = 1.0f / std::sqrt(sq / (float)C + eps);
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) y[j] = (s * x[j] + res[j] - mean) * rstd * w[j] + bi[j];
  *mean_out = mean;
  *rstd_out = rstd;
}

FT_CLONES void ln_row_bwd(const float* dy, const float* x, const float* res, float s, const float* w, float mean,
                          float rstd, int64_t C, float* dx, float* dres, float* dw, float* db, float* r_out) {
  float a = 0.0f, c = 0.0f;
#pragma omp simd reduction(+ : a, c)
  for (int64_t j = 0; j < C; ++j) {
    const float zh = (s * x[j] + res[j] - mean) * rstd;
    const float g = dy[j] * w[j];
    a += g;
    c += g * zh;
    dw[j] += dy[j] * zh;
    db[j] += dy[j];
  }
  a /= (float)C;
  c /= (float)C;
  float r = 0.0f;
#pragma omp simd reduction(+ : r)
  for (int64_t j = 0; j < C; ++j) {
    const float zh = (s * x[j] + res[j] - mean) * rstd;
    const float dz = rstd * (dy[j] * w[j] - a - zh * c);
    dx[j] = s * dz;
    dres[j] = dz;
    r += dz * x[j];
  }
  *r_out = r;
}

void check_inputs(const at::Tensor& x, const at::Tensor& residual, const c10::optional<at::Tensor>& scale,
                  const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 3 && residual.sizes() == x.sizes(), "x, residual must be [B, T, C] of one shape");
  for (const auto* t : {&x, &residual}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "fastticket::rln (cpu): float32 CPU tensors only");
    TORCH_CHECK(t->stride(2) == 1 || t->size(2) == 1, "fastticket::rln (cpu): the last dim must be contiguous");
  }
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == at::kFloat && weight.numel() == x.size(2), "weight: float32 [C]");
  if (scale.has_value() && scale->defined())
    TORCH_CHECK(scale->is_contiguous() && scale->scalar_type() == at::kFloat && scale->numel() == x.size(0), "scale: float32 [B]");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rln_fwd(const at::Tensor& x, const at::Tensor& residual,
                                                       const c10::optional<at::Tensor>& scale, const at::Tensor& weight,
                                                       const at::Tensor& bias, double eps) {
  check_inputs(x, residual, scale, weight);
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == x.size(2), "bias: float32 [C]");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor y = at::empty({B, T, C}, opts), mean = at::empty({B, T}, opts), rstd = at::empty({B, T}, opts);
  const float* sp = (scale.has_value() && scale->defined()) ? scale->data_ptr<float>() : nullptr;
  const float *xp = x.data_ptr<float>(), *rp = residual.data_ptr<float>(), *wp = weight.data_ptr<float>(),
              *bp = bias.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *sdp = rstd.data_ptr<float>();
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), rs0 = residual.stride(0), rs1 = residual.stride(1);
  const float e = (float)eps;
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / T, t = n % T;
      ln_row_fwd(xp + b * xs0 + t * xs1, rp + b * rs0 + t * rs1, sp ? sp[b] : 1.0f, wp, bp, yp + n * C, C, e, mp + n,
                 sdp + n);
    }
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rln_bwd(
    const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& residual, const c10::optional<at::Tensor>& scale,
    const at::Tensor& weight, const at::Tensor& mean, const at::Tensor& rstd) {
  check_inputs(x, residual, scale, weight);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T;
  TORCH_CHECK(dy_in.sizes() == x.sizes() && dy_in.scalar_type() == at::kFloat, "dy: float32 [B, T, C]");
  at::Tensor dy = dy_in.stride(2) == 1 ? dy_in : dy_in.contiguous();
  TORCH_CHECK(mean.is_contiguous() && rstd.is_contiguous() && mean.numel() == N && rstd.numel() == N, "mean, rstd: [B, T]");
  auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dx = at::empty({B, T, C}, opts), dres = at::empty({B, T, C}, opts);
  const int64_t chunks = (N + kRowsPerChunk - 1) / kRowsPerChunk;
  at::Tensor part = at::zeros({std::max<int64_t>(chunks, 1), 2, C}, opts);
  at::Tensor r = at::empty({std::max<int64_t>(N, 1)}, opts);
  const float* sp = (scale.has_value() && scale->defined()) ? scale->data_ptr<float>() : nullptr;
  const float *xp = x.data_ptr<float>(), *rp = residual.data_ptr<float>(), *wp = weight.data_ptr<float>(),
              *gp = dy.data_ptr<float>(), *mp = mean.data_ptr<float>(), *sdp = rstd.data_ptr<float>();
  float *dxp = dx.data_ptr<float>(), *drp = dres.data_ptr<float>(), *pp = part.data_ptr<float>(), *rr = r.data_ptr<float>();
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), rs0 = residual.stride(0), rs1 = residual.stride(1);
  const int64_t gs0 = dy.stride(0), gs1 = dy.stride(1);
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      float* dw = pp + ch * 2 * C;
      float* db = dw + C;
      const int64_t n_end = std::min(N, (ch + 1) * kRowsPerChunk);
      for (int64_t n = ch * kRowsPerChunk; n < n_end; ++n) {
        const int64_t b = n / T, t = n % T;
        ln_row_bwd(gp + b * gs0 + t * gs1, xp + b * xs0 + t * xs1, rp + b * rs0 + t * rs1, sp ? sp[b] : 1.0f, wp, mp[n],
                   sdp[n], C, dxp + n * C, drp + n * C, dw, db, rr + n);
      }
    }
  });
  at::Tensor dweight = at::empty({C}, opts), dbias = at::empty({C}, opts);
  float *dwp = dweight.data_ptr<float>(), *dbp = dbias.data_ptr<float>();
  at::parallel_for(0, 2 * C, 64, [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) {
      float acc = 0.0f;
      for (int64_t ch = 0; ch < chunks; ++ch) acc += pp[ch * 2 * C + j];
      (j < C ? dwp[j] : dbp[j - C]) = acc;
    }
  });
  at::Tensor r_sum = at::empty({B}, opts), r_abs = at::empty({B}, opts);
  float *rsp = r_sum.data_ptr<float>(), *rap = r_abs.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0, a = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      s += rr[b * T + t];
      a += std::fabs(rr[b * T + t]);
    }
    rsp[b] = (float)s;
    rap[b] = (float)a;
  }
  return {dx, dres, dweight, dbias, r_sum, r_abs};
}

TORCH_LIBRARY_IMPL(fastticket, CPU, m) {
  m.impl("rln_fwd", &rln_fwd);
  m.impl("rln_bwd", &rln_bwd);
}

}  // namespace cpu
}  // namespace fastticket
