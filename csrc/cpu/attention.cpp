// masked_attention on CPU: per (example, head) blocks, parallel over B*H with at::parallel_for.
//
// forward : S = scale * Q K[:L]^T (T x L, one block per thread), with a window: real query rows t < L keep
//           keys |t - s| <= window only (the rest -inf, exp gives exact 0); row softmax (lse kept),
//           ctx = P V[:L], out = xi * ctx. Padded keys (j >= L) are never read; padded query rows attend to
//           the L real keys (what SDPA with a key-padding mask does).
// backward: pre-pass r_t = <dOut_t, ctx_t>  ->  dxi[b,h] = sum_t r_t, probe = sum_t |r_t|, Dv_t = xi * r_t;
//           then recompute P from lse, dV = xi P^T dO, dP = xi dO V^T, dS = P (dP - Dv),
//           dQ = scale dS K, dK = scale dS^T Q. A head with xi == 0 gets exact zeros and no GEMMs.
// Every (b, h) is computed by the same sequential code, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/kernels.h"

namespace fastticket {
namespace cpu {
namespace {

struct Geo {
  int64_t B, H, T, D;
};

Geo check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v must be [B, H, T, D] of one shape");
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "fastticket::attn (cpu): float32 CPU tensors only");
    TORCH_CHECK(t->stride(3) == 1 || t->size(3) == 1, "fastticket::attn (cpu): the last dim must be contiguous");
  }
  return {q.size(0), q.size(1), q.size(2), q.size(3)};
}

std::vector<int64_t> seq_lengths(const c10::optional<at::Tensor>& lengths, int64_t B, int64_t T) {
  std::vector<int64_t> L(B, T);
  if (lengths.has_value() && lengths->defined()) {
    at::Tensor l = lengths->to(at::kCPU, at::kLong).contiguous();
    TORCH_CHECK(l.numel() == B, "lengths must have B entries");
    const int64_t* p = l.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(p[b] >= 1, "fastticket::attn: every example needs at least one real token (lengths >= 1)");
      L[b] = p[b] < T ? p[b] : T;
    }
  }
  return L;
}

// [B, H, T, D] view of [B, T, H, D] memory
at::Tensor bthd(int64_t B, int64_t H, int64_t T, int64_t D, const at::TensorOptions& opts) {
  return at::empty({B, T, H, D}, opts.memory_format(at::MemoryFormat::Contiguous)).permute({0, 2, 1, 3});
}

void zero_rows(float* p, int64_t from, int64_t to, int64_t D, int64_t ld) {
  for (int64_t t = from; t < to; ++t) std::fill(p + t * ld, p + t * ld + D, 0.0f);
}

const float* scale_ptr(const c10::optional<at::Tensor>& hs, int64_t B, int64_t H) {
  if (!hs.has_value() || !hs->defined()) return nullptr;
  TORCH_CHECK(hs->scalar_type() == at::kFloat && hs->is_contiguous() && hs->numel() == B * H,
              "head_scale must be a contiguous float32 [B, H] tensor here");
  return hs->data_ptr<float>();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const c10::optional<at::Tensor>& head_scale,
                                                        const c10::optional<at::Tensor>& lengths, double softmax_scale,
                                                        bool save_for_backward, c10::optional<int64_t> window) {
  const Geo g = check_qkv(q, k, v);
  const int64_t B = g.B, H = g.H, T = g.T, D = g.D;
  const float* xi = scale_ptr(head_scale, B, H);
  const std::vector<int64_t> L = seq_lengths(lengths, B, T);
  // out (and dq, dk, dv) are [B, H, T, D] views of [B, T, H, D] memory, as SDPA's CPU kernel returns them: the
  // model's ctx.transpose(1, 2).reshape(B, T, H * D) is then free
  at::Tensor out = bthd(B, H, T, D, q.options());
  const bool separate_ctx = save_for_backward && xi != nullptr;
  at::Tensor ctx = separate_ctx ? at::empty({B, H, T, D}, q.options().memory_format(at::MemoryFormat::Contiguous))
                                : at::empty({0}, q.options());
  at::Tensor lse = save_for_backward ? at::empty({B, H, T}, out.options()) : at::empty({0}, out.options());
  const float sc = (float)softmax_scale;
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* cp = separate_ctx ? ctx.data_ptr<float>() : nullptr;
  float* lp = save_for_backward ? lse.data_ptr<float>() : nullptr;
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), qs2 = q.stride(2);
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), ks2 = k.stride(2);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2);
  const int64_t os0 = out.stride(0), os1 = out.stride(1), os2 = out.stride(2);
  if (B * H * T * D == 0) return {out, ctx, lse};

  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    SequentialBlas sequential;
    std::vector<float> S((size_t)(T * T));
    std::vector<float> lse_local((size_t)T);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, Lb = L[b];
      const float* Q = qp + b * qs0 + h * qs1;
      const float* K = kp + b * ks0 + h * ks1;
      const float* V = vp + b * vs0 + h * vs1;
      float* O = op + b * os0 + h * os1;
      float* C = cp ? cp + bh * T * D : O;
      const int64_t ldc = cp ? D : os2;
      float* l = lp ? lp + bh * T : lse_local.data();
      gemm_rm(false, true, T, Lb, D, sc, Q, qs2, K, ks2, 0.0f, S.data(), Lb);
      if (window.has_value()) band_mask(S.data(), Lb, Lb, Lb, *window);
      softmax_rows(S.data(), T, Lb, Lb, l);
      gemm_rm(false, false, T, D, Lb, 1.0f, S.data(), Lb, V, vs2, 0.0f, C, ldc);
      if (xi != nullptr) {
        const float s = xi[bh];
        for (int64_t t = 0; t < T; ++t)
          for (int64_t d = 0; d < D; ++d) O[t * os2 + d] = s * C[t * ldc + d];
      }
    }
  });
  return {out, ctx, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> attn_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& ctx,
    const at::Tensor& lse, const c10::optional<at::Tensor>& head_scale, const c10::optional<at::Tensor>& lengths,
    double softmax_scale, bool need_qkv, c10::optional<int64_t> window) {
  const Geo g = check_qkv(q, k, v);
  const int64_t B = g.B, H = g.H, T = g.T, D = g.D;
  TORCH_CHECK(dout.sizes() == q.sizes() && dout.scalar_type() == at::kFloat && (dout.stride(3) == 1 || D == 1),
              "dout must be float32 [B, H, T, D] with a contiguous last dim");
  TORCH_CHECK(ctx.sizes() == q.sizes() && ctx.scalar_type() == at::kFloat && (ctx.stride(3) == 1 || D == 1),
              "ctx must be float32 [B, H, T, D] with a contiguous last dim");
  TORCH_CHECK(lse.is_contiguous() && lse.numel() == B * H * T && lse.scalar_type() == at::kFloat, "lse must be contiguous float32 [B, H, T]");
  const float* xi = scale_ptr(head_scale, B, H);
  const std::vector<int64_t> L = seq_lengths(lengths, B, T);
  auto opts = q.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dq = need_qkv ? bthd(B, H, T, D, opts) : at::empty({0}, opts);
  at::Tensor dk = need_qkv ? bthd(B, H, T, D, opts) : at::empty({0}, opts);
  at::Tensor dv = need_qkv ? bthd(B, H, T, D, opts) : at::empty({0}, opts);
  const int64_t ds0 = need_qkv ? dq.stride(0) : 0, ds1 = need_qkv ? dq.stride(1) : 0, ds2 = need_qkv ? dq.stride(2) : 0;
  at::Tensor r_sum = at::empty({B, H}, opts), r_abs = at::empty({B, H}, opts);
  const float sc = (float)softmax_scale;
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const float *gp = dout.data_ptr<float>(), *cp = ctx.data_ptr<float>(), *lp = lse.data_ptr<float>();
  float *dqp = need_qkv ? dq.data_ptr<float>() : nullptr, *dkp = need_qkv ? dk.data_ptr<float>() : nullptr,
        *dvp = need_qkv ? dv.data_ptr<float>() : nullptr;
  float *rsp = r_sum.data_ptr<float>(), *rap = r_abs.data_ptr<float>();
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), qs2 = q.stride(2);
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), ks2 = k.stride(2);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2);
  const int64_t gs0 = dout.stride(0), gs1 = dout.stride(1), gs2 = dout.stride(2);
  const int64_t cs0 = ctx.stride(0), cs1 = ctx.stride(1), cs2 = ctx.stride(2);
  if (B * H == 0) return {dq, dk, dv, r_sum, r_abs};

  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    SequentialBlas sequential;
    std::vector<float> S((size_t)(T * T)), dP((size_t)(T * T)), Dv((size_t)T);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, Lb = L[b];
      const float* Q = qp + b * qs0 + h * qs1;
      const float* K = kp + b * ks0 + h * ks1;
      const float* V = vp + b * vs0 + h * vs1;
      const float* G = gp + b * gs0 + h * gs1;
      const float* C = cp + b * cs0 + h * cs1;
      const float s = xi ? xi[bh] : 1.0f;
      // pre-pass: r_t = <dOut_t, ctx_t>; the mask gradient and the probe come out of it
      double rs = 0.0, ra = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const float* gr = G + t * gs2;
        const float* cr = C + t * cs2;
        float r = 0.0f;
#pragma omp simd reduction(+ : r)
        for (int64_t d = 0; d < D; ++d) r += gr[d] * cr[d];
        Dv[t] = s * r;
        rs += r;
        ra += std::fabs(r);
      }
      rsp[bh] = (float)rs;
      rap[bh] = (float)ra;
      if (!need_qkv) continue;
      float* dQ = dqp + b * ds0 + h * ds1;
      float* dK = dkp + b * ds0 + h * ds1;
      float* dV = dvp + b * ds0 + h * ds1;
      if (s == 0.0f) {  // pruned head: no gradient reaches q, k, v
        zero_rows(dQ, 0, T, D, ds2);
        zero_rows(dK, 0, T, D, ds2);
        zero_rows(dV, 0, T, D, ds2);
        continue;
      }
      gemm_rm(false, true, T, Lb, D, sc, Q, qs2, K, ks2, 0.0f, S.data(), Lb);
      if (window.has_value()) band_mask(S.data(), Lb, Lb, Lb, *window);
      gemm_rm(false, true, T, Lb, D, s, G, gs2, V, vs2, 0.0f, dP.data(), Lb);
      softmax_bwd_rows(S.data(), dP.data(), T, Lb, Lb, lp + bh * T, Dv.data());
      gemm_rm(true, false, Lb, D, T, s, S.data(), Lb, G, gs2, 0.0f, dV, ds2);
      gemm_rm(false, false, T, D, Lb, sc, dP.data(), Lb, K, ks2, 0.0f, dQ, ds2);
      gemm_rm(true, false, Lb, D, T, sc, dP.data(), Lb, Q, qs2, 0.0f, dK, ds2);
      zero_rows(dK, Lb, T, D, ds2);  // padded keys never enter a softmax
      zero_rows(dV, Lb, T, D, ds2);
    }
  });
  return {dq, dk, dv, r_sum, r_abs};
}

TORCH_LIBRARY_IMPL(fastticket, CPU, m) {
  m.impl("attn_fwd", &attn_fwd);
  m.impl("attn_bwd", &attn_bwd);
}

}  // namespace cpu
}  // namespace fastticket
