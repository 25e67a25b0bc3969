// Softmax cross-entropy (nats) over the vocabulary.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::ops {

double crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V) {
  FINEMOE_PROFILE("head_loss");
  // Rows in fixed chunks, each chunk's double sum kept apart and the chunks
  // added in order: the mean is the same for any thread count or timing (an
  // OpenMP reduction would change its last bits run to run).
  constexpr int64_t kRows = 64;
  const int64_t chunks = (N + kRows - 1) / kRows;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    double chunk_total = 0;
    for (int64_t n = c * kRows; n < std::min(N, (c + 1) * kRows); ++n) {
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
      chunk_total += loss;
    }
    partial[static_cast<size_t>(c)] = chunk_total;
  }
  double total = 0;
  for (double t : partial) total += t;
  return N > 0 ? total / double(N) : 0.0;
}

void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale, int64_t N,
                           int64_t V) {
  FINEMOE_PROFILE("head_loss");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* p = probs + n * V;
    float* g = dlogits + n * V;
    for (int64_t v = 0; v < V; ++v) g[v] += scale * p[v];
    g[targets[n]] -= scale;
  }
}

}  // namespace finemoe::ops
