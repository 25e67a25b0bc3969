// Elementwise ops: ReLU and the residual add.
#include "ops.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::ops {

void relu_forward(float* out, const float* inp, int64_t n) {
  FINEMOE_PROFILE("elementwise");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] > 0.f ? inp[i] : 0.f;
}

void relu_backward(float* dinp, const float* dout, const float* out, int64_t n) {
  FINEMOE_PROFILE("elementwise");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dinp[i] += out[i] > 0.f ? dout[i] : 0.f;
}

void relu_backward_inplace(float* d, const float* out, int64_t n) {
  FINEMOE_PROFILE("elementwise");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = out[i] > 0.f ? d[i] : 0.f;
}

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  FINEMOE_PROFILE("elementwise");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace finemoe::ops
