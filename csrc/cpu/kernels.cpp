#include "cpu/kernels.h"

#include <limits>

extern "C" {
// Fortran BLAS entry point; torch's CPU wheels link MKL (x86) or OpenBLAS and export it. Weak: when a torch
// build does not, gemm_rm falls back to at::mm_out.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
// OpenMP ICVs of the calling thread: a BLAS called inside a parallel task reads omp_get_max_threads() to
// size its own team. Weak: absent when torch is built without OpenMP.
int omp_get_max_threads(void) __attribute__((weak));
void omp_set_num_threads(int n) __attribute__((weak));
}

namespace fastticket {
namespace cpu {

SequentialBlas::SequentialBlas() {
  if (omp_get_max_threads != nullptr && omp_set_num_threads != nullptr) {
    prev_ = omp_get_max_threads();
    omp_set_num_threads(1);
  }
}
SequentialBlas::~SequentialBlas() {
  if (prev_ > 0) omp_set_num_threads(prev_);
}

void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  if (sgemm_ != nullptr) {
    // row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)ldc;
    sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor a = trans_a ? at::from_blob(const_cast<float*>(A), {K, M}, {lda, 1}, opts).t()
                         : at::from_blob(const_cast<float*>(A), {M, K}, {lda, 1}, opts);
  at::Tensor b = trans_b ? at::from_blob(const_cast<float*>(B), {N, K}, {ldb, 1}, opts).t()
                         : at::from_blob(const_cast<float*>(B), {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == 0.0f) {
    at::mm_out(c, a, b);
    if (alpha != 1.0f) c.mul_(alpha);
  } else {
    c.mul_(beta).add_(at::mm(a, b), alpha);
  }
}

FT_CLONES void softmax_rows(float* S, int64_t rows, int64_t cols, int64_t ld, float* lse) {
  for (int64_t i = 0; i < rows; ++i) {
    float* s = S + i * ld;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < cols; ++j) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < cols; ++j) {
      float e = fast_exp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < cols; ++j) s[j] *= inv;
    lse[i] = mx + std::log(sum);
  }
}

FT_CLONES void softmax_bwd_rows(float* S, float* dP, int64_t rows, int64_t cols, int64_t ld, const float* lse,
                                const float* Dv) {
  for (int64_t i = 0; i < rows; ++i) {
    float* s = S + i * ld;
    float* dp = dP + i * ld;
    const float l = lse[i], d = Dv[i];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) {
      float p = fast_exp(s[j] - l);
      s[j] = p;
      dp[j] = p * (dp[j] - d);
    }
  }
}

void band_mask(float* S, int64_t rows, int64_t cols, int64_t ld, int64_t window) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < rows; ++t) {
    float* s = S + t * ld;
    const int64_t lo = t - window, hi = t + window;  // kept: lo <= j <= hi
    for (int64_t j = 0; j < cols && j < lo; ++j) s[j] = neg_inf;
    for (int64_t j = hi + 1 > 0 ? hi + 1 : 0; j < cols; ++j) s[j] = neg_inf;
  }
}

}  // namespace cpu
}  // namespace fastticket
