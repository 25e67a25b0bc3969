// CPU GEMM backend: OpenBLAS sgemm for fp32. (bf16/oneDNN: see the
// performance issue; it plugs in behind the same functions.)
#include <cblas.h>

#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"

namespace finemoe::backend {
namespace {
Precision g_precision = Precision::fp32;
}

void set_precision(Precision p) { g_precision = p; }
Precision precision() { return g_precision; }

Precision resolve_precision(const std::string& requested, std::string* why) {
  if (requested == "fp32") {
    if (why) *why = "fp32 requested";
    return Precision::fp32;
  }
  if (why) *why = "bf16 GEMM engine not built yet: using fp32";
  if (requested == "bf16") throw ConfigError("config key 'train.precision': bf16 is not available in this build");
  return Precision::fp32;
}

std::string engine_description() { return "OpenBLAS sgemm (fp32)"; }

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void grouped_gemm(bool ta, bool tb, int64_t count, const int64_t* M, int64_t N, int64_t K, float alpha,
                  const float* const* A, int64_t lda, const float* const* B, int64_t ldb, float beta,
                  float* const* C, int64_t ldc) {
  for (int64_t g = 0; g < count; ++g) gemm(ta, tb, M[g], N, K, alpha, A[g], lda, B[g], ldb, beta, C[g], ldc);
}

}  // namespace finemoe::backend
