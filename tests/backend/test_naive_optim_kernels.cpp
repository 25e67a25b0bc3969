// The optimizer and reduction kernels of the naive reference backend against
// the CPU backend's (kernels.hpp), kernel by kernel on random data, and the
// optimizer's entry points (optimizer.hpp) run through each backend.
//
// Tolerances, and why:
// - scale: one fp32 multiply per element in both: equal bits.
// - sum_squares: the kernel's definition fixes the order of the double
//   additions (kReduceChunk chunks, each in index order, then the chunk sums
//   in order), and double(x)·double(x) is exact for fp32 x (48 significant
//   bits < 53): equal bits, for any OpenMP thread count. Against a long double
//   reference the relative error of n positive terms summed in double is at
//   most (n - 1)·2^-53.
// - adamw_step: the same fp32 operations in the same order. With this
//   project's flags (-std=c++20 is ISO mode, where GCC does not contract
//   a·b + c into a fused multiply-add) the two agree bit for bit (seen on
//   x86-64 with AVX2/FMA), but a build that contracts (-ffp-contract=fast,
//   GNU mode) may contract the CPU's vectorised loop and the naive scalar one
//   differently. Each contraction changes one rounding,
//   so m and v agree to 2 fp32 ulps (a few ulps relative: 1e-6), and p to a few
//   ulps of itself plus 1e-5 relative of the step size lr·(|m̂|/(√v̂+eps) +
//   wd·|p|). The zeroed gradients are exactly 0 and unzeroed ones untouched.
// - find_nonfinite: an index: equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "finemoe/error.hpp"
#include "finemoe/optimizer.hpp"
#include "finemoe/reduce.hpp"
#include "naive_backend.hpp"

namespace {

using namespace finemoe;

std::vector<float> randn(int64_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = d(rng);
  return x;
}

// Sizes: empty, a few elements, one chunk's tail, and above the CPU kernels'
// OpenMP threshold (65536) with a ragged end.
const int64_t kSizes[] = {0, 1, 7, 4097, 70001};

struct AdamWCase {
  const char* name;
  float grad_scale;
  bool zero_grads;
  float weight_decay;
};

Backend::AdamWArgs args_for(const AdamWCase& c, int64_t t) {
  const double b1 = 0.9, b2 = 0.95;
  Backend::AdamWArgs a;
  a.beta1 = float(b1);
  a.beta2 = float(b2);
  a.eps = 1e-8f;
  a.lr = 3e-3f;
  a.inv_bc1 = float(1.0 / (1.0 - std::pow(b1, double(t))));
  a.inv_bc2 = float(1.0 / (1.0 - std::pow(b2, double(t))));
  a.weight_decay = c.weight_decay;
  a.grad_scale = c.grad_scale;
  a.zero_grads = c.zero_grads;
  return a;
}

TEST(NaiveOptimKernels, AdamWStepMatchesCpu) {
  cpu::CpuBackend cpu_be;
  finemoe::testing::NaiveBackend naive;
  const AdamWCase cases[] = {{"plain", 1.0f, false, 0.0f},
                             {"decay", 1.0f, false, 0.1f},
                             {"zero", 1.0f, true, 0.0f},
                             {"scale", 0.37f, false, 0.0f},
                             {"scale+zero+decay", 0.37f, true, 0.1f}};
  const float ulp = std::numeric_limits<float>::epsilon();
  for (const AdamWCase& c : cases)
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(c.name) + " n=" + std::to_string(n));
      const std::vector<float> p0 = randn(n, 1), g0 = randn(n, 2, 0.1f);
      // Moments as after some steps: m of either sign, v > 0.
      std::vector<float> m0 = randn(n, 3, 0.05f), v0 = randn(n, 4, 0.01f);
      for (float& x : v0) x = x * x;
      std::vector<float> p1 = p0, g1 = g0, m1 = m0, v1 = v0;  // CPU
      std::vector<float> p2 = p0, g2 = g0, m2 = m0, v2 = v0;  // naive
      const int64_t t = 5;
      const Backend::AdamWArgs a = args_for(c, t);
      cpu_be.adamw_step(p1.data(), g1.data(), m1.data(), v1.data(), n, a);
      naive.adamw_step(p2.data(), g2.data(), m2.data(), v2.data(), n, a);
      int bad = 0;
      for (int64_t i = 0; i < n && bad < 5; ++i) {
        const size_t k = size_t(i);
        // The step in double, for the scale of p's tolerance.
        const double mh = double(m2[k]) * a.inv_bc1, vh = double(v2[k]) * a.inv_bc2;
        const double step = a.lr * (std::fabs(mh) / (std::sqrt(vh) + a.eps) + a.weight_decay * std::fabs(p0[k]));
        const bool ok = std::fabs(m1[k] - m2[k]) <= 1e-6 * std::fabs(m2[k]) + 1e-30 &&
                        std::fabs(v1[k] - v2[k]) <= 1e-6 * std::fabs(v2[k]) + 1e-30 &&
                        std::fabs(p1[k] - p2[k]) <= 4 * ulp * std::fabs(p2[k]) + 1e-5 * step;
        if (!ok) {
          ++bad;
          ADD_FAILURE() << "i=" << i << " p " << p1[k] << " vs " << p2[k] << ", m " << m1[k] << " vs " << m2[k]
                        << ", v " << v1[k] << " vs " << v2[k];
        }
        // The parameter moved: the kernel ran on every element.
        if (step > 0 && p2[k] == p0[k] && bad < 5) {
          ++bad;
          ADD_FAILURE() << "i=" << i << ": p unchanged";
        }
        if (c.zero_grads) {
          EXPECT_EQ(g1[k], 0.0f);
          EXPECT_EQ(g2[k], 0.0f);
        } else {
          EXPECT_EQ(g1[k], g0[k]);
          EXPECT_EQ(g2[k], g0[k]);
        }
      }
    }
}

// Against the definition evaluated in double from the same fp32 inputs: both
// backends compute AdamW, not merely the same thing. fp32 arithmetic differs
// from it by a few fp32 ulps of the terms each result is made of (m here
// cancels: 0.009 - 0.010, so its tolerance is in ulps of the terms).
TEST(NaiveOptimKernels, AdamWStepMatchesTheDefinition) {
  cpu::CpuBackend cpu_be;
  finemoe::testing::NaiveBackend naive;
  const double u = std::numeric_limits<float>::epsilon();
  for (Backend* be : {static_cast<Backend*>(&cpu_be), static_cast<Backend*>(&naive)}) {
    const float p0 = 0.8f, g0 = -0.2f, m0 = 0.01f, v0 = 0.0004f;
    float p = p0, g = g0, m = m0, v = v0;
    const Backend::AdamWArgs a = args_for({"", 0.5f, true, 0.1f}, 3);
    be->adamw_step(&p, &g, &m, &v, 1, a);
    const double b1 = a.beta1, b2 = a.beta2, gi = double(g0) * double(a.grad_scale);
    const double m_ref = b1 * m0 + (1 - b1) * gi, v_ref = b2 * v0 + (1 - b2) * gi * gi;
    const double mh = m_ref * double(a.inv_bc1), vh = v_ref * double(a.inv_bc2);
    const double upd = mh / (std::sqrt(vh) + double(a.eps)) + double(a.weight_decay) * p0;
    const double p_ref = p0 - double(a.lr) * upd;
    EXPECT_NEAR(m, m_ref, 4 * u * (std::fabs(b1 * m0) + std::fabs((1 - b1) * gi))) << be->describe();
    EXPECT_NEAR(v, v_ref, 4 * u * v_ref) << be->describe();
    // The update's relative error is that of m (cancelled) plus a few ulps.
    const double upd_err = std::fabs(mh / (std::sqrt(vh) + double(a.eps))) *
                               (4 * u * (std::fabs(b1 * m0) + std::fabs((1 - b1) * gi)) / std::fabs(m_ref) + 8 * u) +
                           4 * u * std::fabs(double(a.weight_decay) * p0);
    EXPECT_NEAR(p, p_ref, 2 * u * std::fabs(p_ref) + double(a.lr) * upd_err) << be->describe();
    EXPECT_EQ(g, 0.0f) << be->describe();
  }
}

TEST(NaiveOptimKernels, ScaleMatchesCpuExactly) {
  cpu::CpuBackend cpu_be;
  finemoe::testing::NaiveBackend naive;
  for (int64_t n : kSizes) {
    const std::vector<float> x0 = randn(n, 7);
    std::vector<float> a = x0, b = x0;
    cpu_be.scale(a.data(), n, 0.3f);
    naive.scale(b.data(), n, 0.3f);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(a[size_t(i)], b[size_t(i)]) << "n=" << n << " i=" << i;
      ASSERT_EQ(a[size_t(i)], x0[size_t(i)] * 0.3f) << "n=" << n << " i=" << i;
    }
  }
}

TEST(NaiveOptimKernels, SumSquaresMatchesCpuAndDoubleReference) {
  cpu::CpuBackend cpu_be;
  finemoe::testing::NaiveBackend naive;
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(4095), int64_t(4096), int64_t(4097), int64_t(70001),
                    int64_t(300007)}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const std::vector<float> x = randn(n, 11, 3.0f);
    long double ref = 0;
    for (float v : x) ref += (long double)v * (long double)v;
    const double c = cpu_be.sum_squares(x.data(), n), s = naive.sum_squares(x.data(), n);
    EXPECT_EQ(c, s);  // same order of additions by definition: the same bits
    EXPECT_EQ(c, deterministic_sum_squares(x.data(), n));  // the CPU kernel is core's reduction
    const double bound = double(std::max<int64_t>(n - 1, 0)) * std::ldexp(1.0, -53) * double(ref);
    EXPECT_LE(std::fabs(double(c - ref)), bound + 1e-300);
    if (n == 0) {
      EXPECT_EQ(c, 0.0);
    }
  }
}

TEST(NaiveOptimKernels, FindNonfiniteFindsAPlantedNaNOrInf) {
  cpu::CpuBackend cpu_be;
  finemoe::testing::NaiveBackend naive;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (Backend* be : {static_cast<Backend*>(&cpu_be), static_cast<Backend*>(&naive)}) {
    SCOPED_TRACE(be->describe());
    const int64_t n = 70001;
    std::vector<float> x = randn(n, 13, 1e3f);
    EXPECT_EQ(be->find_nonfinite(x.data(), n), -1);
    EXPECT_EQ(be->find_nonfinite(x.data(), 0), -1);
    x[size_t(n - 1)] = -inf;  // the last element is scanned
    EXPECT_EQ(be->find_nonfinite(x.data(), n), n - 1);
    EXPECT_EQ(be->find_nonfinite(x.data(), n - 1), -1);  // and nothing past n
    x[40000] = inf;
    EXPECT_EQ(be->find_nonfinite(x.data(), n), 40000);
    x[12345] = nan;  // the first one is reported
    EXPECT_EQ(be->find_nonfinite(x.data(), n), 12345);
    x[0] = -nan;
    EXPECT_EQ(be->find_nonfinite(x.data(), n), 0);
    // The largest finite values are finite.
    std::vector<float> big = {std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                              std::numeric_limits<float>::denorm_min()};
    EXPECT_EQ(be->find_nonfinite(big.data(), 3), -1);
  }
}

// optimizer.hpp's entry points run their loops on the backend they are given
// (global_grad_norm needs MPI: its sum is the sum_squares kernel above):
// through the naive backend they agree with the CPU backend (tolerances as
// above), and the scan names the tensor holding the planted value.
TEST(NaiveOptimKernels, OptimizerEntryPointsRunOnTheGivenBackend) {
  finemoe::testing::NaiveBackend naive;
  auto make = [](Backend& be) {
    ParamStore s;
    s.add("w", {300, 301}, ParamClass::replicated);  // decayed, above the OpenMP threshold
    s.add("b", {301}, ParamClass::replicated);       // not decayed
    s.finalize(be);
    const std::vector<float> p = randn(300 * 301, 21), g = randn(300 * 301, 22, 0.1f);
    const std::vector<float> pb = randn(301, 23), gb = randn(301, 24, 0.1f);
    std::copy(p.begin(), p.end(), s.param("w"));
    std::copy(g.begin(), g.end(), s.grad("w"));
    std::copy(pb.begin(), pb.end(), s.param("b"));
    std::copy(gb.begin(), gb.end(), s.grad("b"));
    return s;
  };
  ParamStore a = make(cpu_backend()), b = make(naive);
  const AdamWParams hp{1e-3, 0.9, 0.95, 1e-8, 0.1};
  scale_grads(a, 0.5f);
  scale_grads(b, 0.5f, naive);
  for (const char* name : {"w", "b"})
    for (int64_t i = 0; i < a.info(name).local_count; ++i) ASSERT_EQ(a.grad(name)[i], b.grad(name)[i]) << name;
  adamw_update(a, hp, 1, AdamWStepOptions{0.8f, true});
  adamw_update(b, hp, 1, AdamWStepOptions{0.8f, true}, naive);
  for (const char* name : {"w", "b"})
    for (int64_t i = 0; i < a.info(name).local_count; ++i) {
      // Step 1: |m̂/(√v̂+eps)| ≤ 1, so the step is at most lr·(1 + wd·|p|).
      const double step = hp.lr * (1.0 + hp.weight_decay * std::fabs(b.param(name)[i]));
      ASSERT_NEAR(a.param(name)[i], b.param(name)[i],
                  4 * std::numeric_limits<float>::epsilon() * std::fabs(b.param(name)[i]) + 1e-5 * step)
          << name << " " << i;
      ASSERT_EQ(b.grad(name)[i], 0.0f);
    }
  EXPECT_EQ(first_nonfinite_grad(b, naive), "");
  b.grad("b")[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(first_nonfinite_grad(b, naive), "b");
  // A kernel of one backend on another's memory is refused, naming both.
  try {
    first_nonfinite_grad(b);  // default backend: the CPU one
    ADD_FAILURE() << "first_nonfinite_grad ran the CPU backend on the naive backend's store";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("first_nonfinite_grad"), std::string::npos) << msg;
    EXPECT_NE(msg.find(naive.describe()), std::string::npos) << msg;
    EXPECT_NE(msg.find(cpu_backend().describe()), std::string::npos) << msg;
  }
  EXPECT_THROW(scale_grads(a, 1.0f, naive), Error);
  EXPECT_THROW(adamw_update(b, hp, 2), Error);
  b.grad("w")[300 * 301 - 1] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(first_nonfinite_grad(b, naive), "w");
}

}  // namespace
