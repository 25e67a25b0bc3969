// Token + learned position embedding.
#include <omp.h>

#include "ops.hpp"
#include "finemoe/profile.hpp"
#include "omp_util.hpp"

namespace finemoe::ops {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B,
                       int64_t T, int64_t d) {
  FINEMOE_PROFILE("embedding");
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * T; ++r) {
    const float* te = wte + int64_t(tokens[r]) * d;
    const float* pe = wpe + (r % T) * d;
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = te[i] + pe[i];
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B,
                        int64_t T, int64_t d) {
  FINEMOE_PROFILE("embedding");
  // Repeated tokens scatter into the same wte row, so rows cannot be split
  // over threads. Each thread owns a slice of the columns instead and walks all
  // rows: race-free, deterministic, and still contiguous within a row.
#pragma omp parallel
  {
    auto [c0, c1] = thread_range(d);
    for (int64_t r = 0; r < B * T; ++r) {
      const float* g = dout + r * d;
      float* dte = dwte + int64_t(tokens[r]) * d;
      float* dpe = dwpe + (r % T) * d;
      for (int64_t i = c0; i < c1; ++i) {
        dte[i] += g[i];
        dpe[i] += g[i];
      }
    }
  }
}

}  // namespace finemoe::ops
