// Row kernels shared by the CPU ops: plain loops written so that GCC vectorizes them, compiled in
// several ISA variants (target_clones: AVX-512, AVX2+FMA, baseline) and picked at load time, since the
// extension is built without -march flags. GEMMs go to the BLAS that torch links (sgemm_), falling back
// to at::mm_out when that symbol is absent.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && !defined(FASTTICKET_NO_CLONES)
#define FT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FT_CLONES
#endif

namespace fastticket {
namespace cpu {

// Branch-free expf (Cephes polynomial, ~2 ulp on [-87, 88]); rounds with the 1.5*2^23 trick so that no
// floor()/libm call blocks vectorization. Inputs below -87 (and -inf: masked scores) give exactly 0.
static inline float fast_exp(float x_in) {
  float x = x_in < -87.0f ? -87.0f : x_in;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  float t = x * 1.44269504088896341f + magic;
  int32_t ti;
  std::memcpy(&ti, &t, 4);
  float n = t - magic;
  int32_t ni = ti - 0x4B400000;  // bits of 1.5*2^23
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x_in < -87.0f ? 0.0f : p * scale;
}

// Inside an at::parallel_for task: the BLAS runs single-threaded on this thread (MKL would otherwise open
// nested OpenMP teams per call and spin: measured 3x slower on 2 cores).
struct SequentialBlas {
  SequentialBlas();
  ~SequentialBlas();
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;

 private:
  int prev_ = 0;
};

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, all row-major with row strides lda, ldb, ldc.
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Softmax of each of `rows` rows of S (row stride ld, `cols` used) in place; lse[i] = log Σ_j exp(S_ij).
void softmax_rows(float* S, int64_t rows, int64_t cols, int64_t ld, float* lse);
// P = exp(S - lse_i) in place of S; dP = P * (dP - Dv_i) in place of dP.
void softmax_bwd_rows(float* S, float* dP, int64_t rows, int64_t cols, int64_t ld, const float* lse, const float* Dv);
// Local attention: S[t, s] = -inf where |t - s| > window, for the rows t < rows (the real queries).
void band_mask(float* S, int64_t rows, int64_t cols, int64_t ld, int64_t window);

}  // namespace cpu
}  // namespace fastticket
