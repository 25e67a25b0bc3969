// LayerNorm over the last dimension, eps 1e-5.
#include <cmath>

#include "finemoe/ops.hpp"
#include "finemoe/profile.hpp"
#include "model/omp_util.hpp"

namespace finemoe::ops {

namespace {
constexpr float kEps = 1e-5f;
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int64_t N, int64_t d) {
  FINEMOE_PROFILE("layernorm");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * d;
    // Two passes in double: rows are short and this keeps the statistics
    // exact enough for fp32 finite-difference checks.
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += x[i];
    const double m = s / double(d);
    double v = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double c = x[i] - m;
      v += c * c;
    }
    const float rs = float(1.0 / std::sqrt(v / double(d) + kEps));
    const float mf = float(m);
    float* o = out + n * d;
    for (int64_t i = 0; i < d; ++i) o[i] = (x[i] - mf) * rs * w[i] + b[i];
    mean[n] = mf;
    rstd[n] = rs;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t d) {
  FINEMOE_PROFILE("layernorm");
  // dinp: rows are independent.
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * d;
    const float* g = dout + n * d;
    const float m = mean[n], rs = rstd[n];
    // dxhat = g·w; dx = rs·(dxhat - mean(dxhat) - xhat·mean(dxhat·xhat))
    float sum_g = 0, sum_gx = 0;
    for (int64_t i = 0; i < d; ++i) {
      const float dxh = g[i] * w[i];
      sum_g += dxh;
      sum_gx += dxh * (x[i] - m) * rs;
    }
    const float mg = sum_g / float(d), mgx = sum_gx / float(d);
    float* dx = dinp + n * d;
    for (int64_t i = 0; i < d; ++i) {
      const float xh = (x[i] - m) * rs;
      dx[i] += rs * (g[i] * w[i] - mg - xh * mgx);
    }
  }
  // dw, db: sums over rows; each thread owns a column slice.
#pragma omp parallel
  {
    auto [c0, c1] = thread_range(d);
    for (int64_t n = 0; n < N; ++n) {
      const float* x = inp + n * d;
      const float* g = dout + n * d;
      const float m = mean[n], rs = rstd[n];
      for (int64_t i = c0; i < c1; ++i) {
        dw[i] += g[i] * (x[i] - m) * rs;
        db[i] += g[i];
      }
    }
  }
}

}  // namespace finemoe::ops
