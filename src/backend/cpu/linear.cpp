// Linear layer over the backend GEMM. Weights are [in, out] (row-major), so
// every product is a plain (non-transposed where possible) sgemm.
#include "finemoe/backend.hpp"
#include "ops.hpp"
#include "omp_util.hpp"

namespace finemoe::ops {

namespace {
void linear(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C, int64_t OC,
            backend::Epilogue ep) {
  float beta = 0.f;
  if (b) {
    // Seed the output with the bias and let the GEMM accumulate onto it.
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      float* o = out + n * OC;
      for (int64_t j = 0; j < OC; ++j) o[j] = b[j];
    }
    beta = 1.f;
  }
  backend::gemm(false, false, N, OC, C, 1.f, inp, C, W, OC, beta, out, OC, ep);
}
}  // namespace

void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                    int64_t OC) {
  linear(out, inp, W, b, N, C, OC, backend::Epilogue::none);
}

void linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                         int64_t OC) {
  linear(out, inp, W, b, N, C, OC, backend::Epilogue::relu);
}

void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                     int64_t N, int64_t C, int64_t OC) {
  // dinp[N,C] += dout[N,OC] · Wᵀ
  if (dinp) backend::gemm(false, true, N, C, OC, 1.f, dout, OC, W, OC, 1.f, dinp, C);
  // dW[C,OC] += inpᵀ · dout
  backend::gemm(true, false, C, OC, N, 1.f, inp, C, dout, OC, 1.f, dW, OC);
  if (db) {
#pragma omp parallel
    {
      auto [c0, c1] = thread_range(OC);
      for (int64_t n = 0; n < N; ++n) {
        const float* g = dout + n * OC;
        for (int64_t j = c0; j < c1; ++j) db[j] += g[j];
      }
    }
  }
}

}  // namespace finemoe::ops
