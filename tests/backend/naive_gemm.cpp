// Naive GEMMs: the triple loop of the definition, accumulated in double so
// that the reference is more accurate than any engine it is compared with.
#include <algorithm>
#include <cstdlib>
#include <new>

#include "naive_backend.hpp"

namespace finemoe::testing {

// Memory: plain malloc'd host memory, byte loops for fills and copies.
void* NaiveBackend::allocate(int64_t bytes) {
  const size_t rounded = ((size_t(bytes) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  for (size_t i = 0; i < rounded; ++i) static_cast<unsigned char*>(p)[i] = 0;
  return p;
}
void NaiveBackend::deallocate(void* p) { std::free(p); }
void NaiveBackend::fill_zero(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
}
void NaiveBackend::fill(float* x, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}
void NaiveBackend::copy_from_host(void* dst, const void* src, int64_t bytes) { copy(dst, src, bytes); }
void NaiveBackend::copy_to_host(void* dst, const void* src, int64_t bytes) { copy(dst, src, bytes); }
void NaiveBackend::copy(void* dst, const void* src, int64_t bytes) {
  for (int64_t i = 0; i < bytes; ++i) static_cast<unsigned char*>(dst)[i] = static_cast<const unsigned char*>(src)[i];
}

void NaiveBackend::gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                        const float* B, int64_t ldb, float beta, float* C, int64_t ldc, backend::Epilogue ep) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const float a = ta ? A[k * lda + i] : A[i * lda + k];
        const float b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += double(a) * double(b);
      }
      float& c = C[i * ldc + j];
      // beta = 0 overwrites (C may hold garbage or NaN), as BLAS does.
      c = float(double(alpha) * s + (beta == 0.0f ? 0.0 : double(beta) * double(c)));
      if (ep == backend::Epilogue::relu) c = std::max(c, 0.0f);
    }
}

void NaiveBackend::gemm_fp32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                             int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, backend::Epilogue::none);
}

void NaiveBackend::grouped_gemm(bool ta, bool tb, int64_t count, const int64_t* M, int64_t N, int64_t K,
                                float alpha, const float* const* A, int64_t lda, const float* const* B, int64_t ldb,
                                float beta, float* const* C, int64_t ldc, backend::Epilogue ep) {
  for (int64_t p = 0; p < count; ++p)
    if (M[p] > 0) gemm(ta, tb, M[p], N, K, alpha, A[p], lda, B[p], ldb, beta, C[p], ldc, ep);
}

}  // namespace finemoe::testing
