// The narrow kernel interface model code calls for matrix work. Which engine
// runs it (OpenBLAS sgemm, oneDNN fp32/bf16, cuBLAS) is the backend's business:
// model code never includes BLAS, oneDNN, CUDA or MPI headers.
//
// All matrices are row-major. gemm computes
//     C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C
// with op(X) = X or Xᵀ (trans_*), leading dimensions in elements.
#pragma once
#include <cstdint>
#include <string>

namespace finemoe::backend {

enum class Precision { fp32, bf16 };

// Precision of GEMM inputs (accumulation is always fp32). Global per process;
// set once at start-up from train.precision. The router and everything
// outside GEMMs stay fp32 regardless.
void set_precision(Precision p);
Precision precision();
// Resolves train.precision ("fp32" | "bf16" | "auto") for this CPU; `why`
// receives a one-line explanation of the choice.
Precision resolve_precision(const std::string& requested, std::string* why);
// e.g. "OpenBLAS sgemm (fp32)" or "oneDNN matmul, avx512_core_amx (bf16)".
std::string engine_description();

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Same operation on `count` independent problems that share trans flags, N, K
// and leading dimensions but have their own M (rows; may be 0) and pointers.
// This is the experts' grouped GEMM: hundreds of small problems at large G.
void grouped_gemm(bool trans_a, bool trans_b, int64_t count, const int64_t* M, int64_t N, int64_t K,
                  float alpha, const float* const* A, int64_t lda, const float* const* B, int64_t ldb,
                  float beta, float* const* C, int64_t ldc);

}  // namespace finemoe::backend
