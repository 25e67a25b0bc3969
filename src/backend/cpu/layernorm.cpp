// LayerNorm over the last dimension, eps 1e-5.
//
// Per-row reductions use a fixed number of independent lane accumulators
// (kLanes partial sums, element i goes to lane i % kLanes, lanes combined by a
// fixed pairwise tree). GCC cannot vectorise a plain `s += x[i]` loop without
// -ffast-math (that would reassociate), but it does vectorise the lane form,
// and the summation order is still fixed: results do not depend on the thread
// count or on anything but d.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops.hpp"
#include "finemoe/profile.hpp"
#include "omp_util.hpp"
#include "vec8.hpp"

namespace finemoe::ops {

namespace {
constexpr float kEps = 1e-5f;
constexpr int kLanes = 16;  // 2 AVX2 vectors of float, 4 of double
constexpr int64_t kRowChunk = 32;  // rows per dw/db partial sum in the backward

// Fixed pairwise combination of the lanes.
template <typename T>
inline T combine_lanes(T* a) {
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) a[l] += a[l + w];
  return a[0];
}

// Σ x[i] in double.
inline double row_sum(const float* x, int64_t d) {
  double a[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) a[l] += double(x[i + l]);
  for (int l = 0; i + l < d; ++l) a[l] += double(x[i + l]);
  return combine_lanes(a);
}

// Σ (x[i] - m)² in double.
inline double row_sqdev(const float* x, double m, int64_t d) {
  double a[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double c = double(x[i + l]) - m;
      a[l] += c * c;
    }
  for (int l = 0; i + l < d; ++l) {
    const double c = double(x[i + l]) - m;
    a[l] += c * c;
  }
  return combine_lanes(a);
}

// Σ g·w and Σ g·w·(x - m)·rs in float, kLanes partial sums as two 8-float
// vectors each (GCC vector extensions: GCC would vectorise the plain lane
// loops across blocks, with costly shuffles).
using vec8::load8;
using vec8::v8f;
struct DotSums {
  float g, gx;
};
inline DotSums row_dot_sums(const float* g, const float* w, const float* x, float m, float rs, int64_t d) {
  v8f ag0 = {}, ag1 = {}, ax0 = {}, ax1 = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    const v8f dxh0 = load8(g + i) * load8(w + i), dxh1 = load8(g + i + 8) * load8(w + i + 8);
    ag0 += dxh0;
    ag1 += dxh1;
    ax0 += dxh0 * ((load8(x + i) - m) * rs);
    ax1 += dxh1 * ((load8(x + i + 8) - m) * rs);
  }
  float a[kLanes], b[kLanes];
  std::memcpy(a, &ag0, sizeof ag0);
  std::memcpy(a + 8, &ag1, sizeof ag1);
  std::memcpy(b, &ax0, sizeof ax0);
  std::memcpy(b + 8, &ax1, sizeof ax1);
  for (int l = 0; i + l < d; ++l) {
    const float dxh = g[i + l] * w[i + l];
    a[l] += dxh;
    b[l] += dxh * ((x[i + l] - m) * rs);
  }
  return {combine_lanes(a), combine_lanes(b)};
}

// dx += rs·(g·w - mg - xh·mgx), pw += g·xh, pb += g. pw/pb are private
// scratch (restrict), which keeps the loop's run-time alias checks few enough
// for GCC to vectorise it.
inline void row_grads(float* dx, float* __restrict pw, float* __restrict pb, const float* g, const float* w,
                      const float* x, float m, float rs, float mg, float mgx, int64_t d) {
  for (int64_t i = 0; i < d; ++i) {
    const float xh = (x[i] - m) * rs;
    dx[i] += rs * (g[i] * w[i] - mg - xh * mgx);
    pw[i] += g[i] * xh;
    pb[i] += g[i];
  }
}
}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int64_t N, int64_t d) {
  FINEMOE_PROFILE("layernorm");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * d;
    // Two passes in double: keeps the statistics exact enough for fp32
    // finite-difference checks (and the variance free of cancellation).
    const double m = row_sum(x, d) / double(d);
    const double v = row_sqdev(x, m, d);
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
  // One pass over the rows computes dinp and, per fixed chunk of kRowChunk
  // rows, partial sums of dw and db (x and dout are read from memory once).
  // The chunks do not depend on the thread count, and the partials are added
  // to dw/db in chunk order, so the results do not either.
  const int64_t nchunks = (N + kRowChunk - 1) / kRowChunk;
  thread_local std::vector<float> part_buf;  // only ever grown: no allocation in steady state
  if (int64_t(part_buf.size()) < nchunks * 2 * d) part_buf.resize(nchunks * 2 * d);
  float* part = part_buf.data();
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nchunks; ++c) {
    float* __restrict pw = part + c * 2 * d;
    float* __restrict pb = pw + d;
    for (int64_t i = 0; i < d; ++i) pw[i] = pb[i] = 0.f;
    const int64_t n1 = std::min(N, (c + 1) * kRowChunk);
    for (int64_t n = c * kRowChunk; n < n1; ++n) {
      const float* x = inp + n * d;
      const float* g = dout + n * d;
      const float m = mean[n], rs = rstd[n];
      // dxhat = g·w; dx = rs·(dxhat - mean(dxhat) - xhat·mean(dxhat·xhat))
      const DotSums s = row_dot_sums(g, w, x, m, rs, d);
      const float mg = s.g / float(d), mgx = s.gx / float(d);
      row_grads(dinp + n * d, pw, pb, g, w, x, m, rs, mg, mgx, d);
    }
  }
  // dw, db += the chunk partials in chunk order; each thread owns a column slice.
#pragma omp parallel
  {
    auto [c0, c1] = thread_range(d);
    for (int64_t c = 0; c < nchunks; ++c) {
      const float* __restrict pw = part + c * 2 * d;
      const float* __restrict pb = pw + d;
      float* __restrict dwp = dw;
      float* __restrict dbp = db;
      for (int64_t i = c0; i < c1; ++i) {
        dwp[i] += pw[i];
        dbp[i] += pb[i];
      }
    }
  }
}

}  // namespace finemoe::ops
