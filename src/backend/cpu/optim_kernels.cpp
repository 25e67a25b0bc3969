// CpuBackend's optimizer and reduction kernels (kernels.hpp): the loops that
// src/train/optimizer.cpp and the trainer ran before the backend object
// existed, moved here unchanged, so the bits (and bit-exact resume from
// checkpoints written before) are the same.
#include <cmath>

#include "cpu_backend.hpp"
#include "finemoe/reduce.hpp"

namespace finemoe::cpu {

void CpuBackend::adamw_step(float* p_, float* g_, float* m_, float* v_, int64_t n, const AdamWArgs& a) {
  float* __restrict p = p_;
  float* __restrict g = g_;
  float* __restrict m = m_;
  float* __restrict v = v_;
  const float b1 = a.beta1, b2 = a.beta2, eps = a.eps, lr = a.lr;
  const float inv_bc1 = a.inv_bc1, inv_bc2 = a.inv_bc2, wd = a.weight_decay;
  const float scale = a.grad_scale;
  const bool scaled = scale != 1.0f, zero = a.zero_grads;
  // Branch-free body so that it vectorises (with -fno-math-errno, sqrt too).
#pragma omp parallel for schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = scaled ? g[i] * scale : g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * inv_bc1, vhat = vi * inv_bc2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
    if (zero) g[i] = 0.0f;
  }
}

void CpuBackend::scale(float* g, int64_t n, float factor) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] *= factor;
}

double CpuBackend::sum_squares(const float* x, int64_t n) { return deterministic_sum_squares(x, n); }

int64_t CpuBackend::find_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

}  // namespace finemoe::cpu
