// Naive optimizer and reduction kernels: the definitions of kernels.hpp as
// plain loops, one thread, no OpenMP, no vectorisation hints (no __restrict).
#include <cmath>

#include "finemoe/reduce.hpp"
#include "naive_backend.hpp"

namespace finemoe::testing {

void NaiveBackend::adamw_step(float* p, float* g, float* m, float* v, int64_t n, const AdamWArgs& a) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (a.grad_scale != 1.0f) gi = gi * a.grad_scale;
    m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * gi;
    v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * gi * gi;
    const float mhat = m[i] * a.inv_bc1;
    const float vhat = v[i] * a.inv_bc2;
    p[i] = p[i] - a.lr * (mhat / (std::sqrt(vhat) + a.eps) + a.weight_decay * p[i]);
    if (a.zero_grads) g[i] = 0.0f;
  }
}

void NaiveBackend::scale(float* x, int64_t n, float factor) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * factor;
}

// The definition's order: chunks of kReduceChunk summed in index order, then
// the chunk sums in chunk order.
double NaiveBackend::sum_squares(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t lo = 0; lo < n; lo += kReduceChunk) {
    double chunk = 0.0;
    for (int64_t i = lo; i < n && i < lo + kReduceChunk; ++i) chunk += double(x[i]) * double(x[i]);
    total += chunk;
  }
  return total;
}

int64_t NaiveBackend::find_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(x[i]) || std::isinf(x[i])) return i;
  return -1;
}

}  // namespace finemoe::testing
