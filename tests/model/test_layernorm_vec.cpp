// LayerNorm's lane-accumulator reductions against a plain double-precision
// reference on odd widths (lane tails, d < one lane block), and the results'
// independence of the OpenMP thread count (bitwise).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/ops.hpp"

namespace ops = finemoe::ops;

namespace {

struct LnResult {
  std::vector<float> out, mean, rstd, dx, dw, db;
};

LnResult run_ln(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                const std::vector<float>& g, int64_t N, int64_t d) {
  LnResult r;
  r.out.resize(N * d), r.mean.resize(N), r.rstd.resize(N);
  r.dx.assign(N * d, 0.25f), r.dw.assign(d, 0.5f), r.db.assign(d, -0.5f);  // backward accumulates
  ops::layernorm_forward(r.out.data(), r.mean.data(), r.rstd.data(), x.data(), w.data(), b.data(), N, d);
  ops::layernorm_backward(r.dx.data(), r.dw.data(), r.db.data(), g.data(), x.data(), w.data(), r.mean.data(),
                          r.rstd.data(), N, d);
  return r;
}

}  // namespace

TEST(LayerNormVec, MatchesDoubleReferenceOnOddWidths) {
  for (int64_t d : {1, 7, 16, 33, 512, 515}) {
    for (int64_t N : {1, 5, 37, 70}) {
      std::mt19937_64 rng(17 * d + N);
      std::normal_distribution<float> nd;
      std::vector<float> x(N * d), w(d), b(d), g(N * d);
      for (auto& v : x) v = 3.f + 2.f * nd(rng);  // an offset mean: the variance must not cancel
      for (auto& v : w) v = nd(rng);
      for (auto& v : b) v = nd(rng);
      for (auto& v : g) v = nd(rng);
      const LnResult r = run_ln(x, w, b, g, N, d);
      std::vector<double> rdw(d, 0.5), rdb(d, -0.5);
      for (int64_t n = 0; n < N; ++n) {
        const float* xr = x.data() + n * d;
        const float* gr = g.data() + n * d;
        double s = 0;
        for (int64_t i = 0; i < d; ++i) s += xr[i];
        const double m = s / double(d);
        double v = 0;
        for (int64_t i = 0; i < d; ++i) v += (xr[i] - m) * (xr[i] - m);
        const double rs = 1.0 / std::sqrt(v / double(d) + 1e-5);
        ASSERT_NEAR(r.mean[n], m, 1e-6 * (1 + std::abs(m))) << "d " << d << " n " << n;
        ASSERT_NEAR(r.rstd[n], rs, 2e-6 * rs) << "d " << d << " n " << n;
        double sg = 0, sgx = 0;
        for (int64_t i = 0; i < d; ++i) {
          const double xh = (xr[i] - m) * rs;
          ASSERT_NEAR(r.out[n * d + i], xh * w[i] + b[i], 1e-5 * (1 + std::abs(xh * w[i]) + std::abs(b[i])))
              << "d " << d << " n " << n << " i " << i;
          sg += double(gr[i]) * w[i];
          sgx += double(gr[i]) * w[i] * xh;
          rdw[i] += double(gr[i]) * xh;
          rdb[i] += gr[i];
        }
        const double mg = sg / double(d), mgx = sgx / double(d);
        for (int64_t i = 0; i < d; ++i) {
          const double xh = (xr[i] - m) * rs;
          const double ref = 0.25 + rs * (double(gr[i]) * w[i] - mg - xh * mgx);
          // The terms are O(rs·|g·w|); float round-off in d-term sums.
          ASSERT_NEAR(r.dx[n * d + i], ref, 2e-5 * rs * (1 + std::abs(double(gr[i]) * w[i]) + std::abs(mg) + std::abs(xh * mgx)))
              << "d " << d << " n " << n << " i " << i;
        }
      }
      for (int64_t i = 0; i < d; ++i) {
        ASSERT_NEAR(r.dw[i], rdw[i], 1e-5 * (1 + N)) << "d " << d << " N " << N << " i " << i;
        ASSERT_NEAR(r.db[i], rdb[i], 1e-5 * (1 + N)) << "d " << d << " N " << N << " i " << i;
      }
    }
  }
}

TEST(LayerNormVec, IndependentOfThreadCount) {
  const int saved = omp_get_max_threads();
  for (int64_t d : {7, 33, 515}) {
    const int64_t N = 101;
    std::mt19937_64 rng(5 + d);
    std::normal_distribution<float> nd;
    std::vector<float> x(N * d), w(d), b(d), g(N * d);
    for (auto& v : x) v = 1.f + nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    for (auto& v : g) v = nd(rng);
    omp_set_num_threads(1);
    const LnResult r1 = run_ln(x, w, b, g, N, d);
    for (int nt : {2, 3}) {
      omp_set_num_threads(nt);
      const LnResult r2 = run_ln(x, w, b, g, N, d);
      EXPECT_EQ(r1.out, r2.out) << "d " << d << " threads " << nt;
      EXPECT_EQ(r1.mean, r2.mean) << "d " << d << " threads " << nt;
      EXPECT_EQ(r1.rstd, r2.rstd) << "d " << d << " threads " << nt;
      EXPECT_EQ(r1.dx, r2.dx) << "d " << d << " threads " << nt;
      EXPECT_EQ(r1.dw, r2.dw) << "d " << d << " threads " << nt;
      EXPECT_EQ(r1.db, r2.db) << "d " << d << " threads " << nt;
    }
  }
  omp_set_num_threads(saved);
}
