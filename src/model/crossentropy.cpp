// Softmax cross-entropy (nats) over the vocabulary.
#include <cmath>

#include "finemoe/ops.hpp"

namespace finemoe::ops {

double crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * V;
    float* p = probs + n * V;
    float mx = z[0];
    for (int64_t v = 1; v < V; ++v) mx = z[v] > mx ? z[v] : mx;
    double s = 0;  // V can be 50k: accumulate the normaliser in double
    for (int64_t v = 0; v < V; ++v) {
      const float e = std::exp(z[v] - mx);
      p[v] = e;
      s += e;
    }
    const float inv = float(1.0 / s);
    for (int64_t v = 0; v < V; ++v) p[v] *= inv;
    // loss = logsumexp(z) - z[target], computed from the logits (not log p)
    // so that it stays accurate when p[target] underflows.
    const double loss = std::log(s) + double(mx) - double(z[targets[n]]);
    losses[n] = float(loss);
    total += loss;
  }
  return N > 0 ? total / double(N) : 0.0;
}

void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale, int64_t N,
                           int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* p = probs + n * V;
    float* g = dlogits + n * V;
    for (int64_t v = 0; v < V; ++v) g[v] += scale * p[v];
    g[targets[n]] -= scale;
  }
}

}  // namespace finemoe::ops
