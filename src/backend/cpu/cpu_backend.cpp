// CpuBackend's GEMMs and dense kernels: thin forwards to the engine functions
// of backend.hpp and the llm.c-style kernels of ops.hpp, so the code paths
// (and the bits) are those the model ran before the backend object existed.
#include "cpu_backend.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "finemoe/backend.hpp"
#include "finemoe/device.hpp"
#include "finemoe/memory.hpp"
#include "ops.hpp"

namespace finemoe {

Backend& cpu_backend() {
  static cpu::CpuBackend be;
  return be;
}

namespace cpu {

std::string CpuBackend::describe() const { return "cpu: " + backend::engine_description(); }

// Host memory, as Buffer<T> (memory.hpp) allocates it: aligned for the GEMM
// engines, zero-filled.
void* CpuBackend::allocate(int64_t bytes) {
  const size_t rounded = ((size_t(bytes) + kAlign - 1) / kAlign) * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}
void CpuBackend::deallocate(void* p) { std::free(p); }
void CpuBackend::fill_zero(float* x, int64_t n) {
  if (n > 0) std::memset(x, 0, size_t(n) * sizeof(float));
}
void CpuBackend::fill(float* x, int64_t n, float value) {
  if (n > 0) std::fill_n(x, n, value);
}
void CpuBackend::copy_from_host(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, size_t(bytes));
}
void CpuBackend::copy_to_host(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, size_t(bytes));
}
void CpuBackend::copy(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, size_t(bytes));
}

void CpuBackend::gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc, backend::Epilogue ep) {
  backend::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}
void CpuBackend::gemm_fp32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  backend::gemm_fp32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void CpuBackend::grouped_gemm(bool ta, bool tb, int64_t count, const int64_t* M, int64_t N, int64_t K, float alpha,
                              const float* const* A, int64_t lda, const float* const* B, int64_t ldb, float beta,
                              float* const* C, int64_t ldc, backend::Epilogue ep) {
  backend::grouped_gemm(ta, tb, count, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}

void CpuBackend::embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B,
                                   int64_t T, int64_t d) {
  ops::embedding_forward(out, tokens, wte, wpe, B, T, d);
}
void CpuBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B,
                                    int64_t T, int64_t d) {
  ops::embedding_backward(dwte, dwpe, dout, tokens, B, T, d);
}
void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                   const float* b, int64_t N, int64_t d) {
  ops::layernorm_forward(out, mean, rstd, inp, w, b, N, d);
}
void CpuBackend::layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                    const float* w, const float* mean, const float* rstd, int64_t N, int64_t d) {
  ops::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, d);
}
void CpuBackend::linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                                int64_t OC) {
  ops::linear_forward(out, inp, W, b, N, C, OC);
}
void CpuBackend::linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N,
                                     int64_t C, int64_t OC) {
  ops::linear_relu_forward(out, inp, W, b, N, C, OC);
}
void CpuBackend::linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp,
                                 const float* W, int64_t N, int64_t C, int64_t OC) {
  ops::linear_backward(dinp, dW, db, dout, inp, W, N, C, OC);
}
void CpuBackend::attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d,
                                   int64_t H) {
  ops::attention_forward(out, att, qkv, B, T, d, H);
}
void CpuBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                                    const float* att, int64_t B, int64_t T, int64_t d, int64_t H) {
  ops::attention_backward(dqkv, scratch, dout, qkv, att, B, T, d, H);
}
void CpuBackend::relu_forward(float* out, const float* inp, int64_t n) { ops::relu_forward(out, inp, n); }
void CpuBackend::relu_backward(float* dinp, const float* dout, const float* out, int64_t n) {
  ops::relu_backward(dinp, dout, out, n);
}
void CpuBackend::relu_backward_inplace(float* d, const float* out, int64_t n) { ops::relu_backward_inplace(d, out, n); }
void CpuBackend::residual_forward(float* out, const float* a, const float* b, int64_t n) {
  ops::residual_forward(out, a, b, n);
}
double CpuBackend::crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                                        int64_t N, int64_t V) {
  return ops::crossentropy_forward(losses, probs, logits, targets, N, V);
}
void CpuBackend::crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale,
                                       int64_t N, int64_t V) {
  ops::crossentropy_backward(dlogits, probs, targets, scale, N, V);
}

}  // namespace cpu
}  // namespace finemoe
