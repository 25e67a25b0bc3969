#include <gtest/gtest.h>

#include <cmath>

#include "finemoe/optimizer.hpp"
#include "finemoe/reduce.hpp"

using namespace finemoe;

TEST(Schedule, WarmupThenCosineByHand) {
  // 100 steps, 10 warmup, lr 1e-3 -> 1e-4.
  EXPECT_DOUBLE_EQ(lr_at(0, 100, 10, 1e-3, 1e-4), 1e-4);
  EXPECT_DOUBLE_EQ(lr_at(4, 100, 10, 1e-3, 1e-4), 5e-4);
  EXPECT_DOUBLE_EQ(lr_at(9, 100, 10, 1e-3, 1e-4), 1e-3);
  EXPECT_DOUBLE_EQ(lr_at(10, 100, 10, 1e-3, 1e-4), 1e-3);  // cosine start
  EXPECT_NEAR(lr_at(99, 100, 10, 1e-3, 1e-4), 1e-4, 1e-15);  // floor at the last step
  // midpoint of the decay (progress 0.5): (lr + lr_min)/2
  // decay steps 90 -> progress = (s-10)/89; choose s with progress 0.5: not integral, check formula instead
  const double p = 30.0 / 89.0;
  EXPECT_NEAR(lr_at(40, 100, 10, 1e-3, 1e-4), 1e-4 + 0.5 * 9e-4 * (1 + std::cos(M_PI * p)), 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(0, 100, 0, 1e-3, 1e-4), 1e-3);
}

TEST(AdamW, TwoStepsByHand) {
  ParamStore s;
  s.add("w", {1, 2}, ParamClass::replicated);  // matrix: decayed
  s.add("b", {1}, ParamClass::replicated);     // vector: not decayed
  s.finalize(cpu_backend());
  s.param("w")[0] = 1.0f;
  s.param("w")[1] = -2.0f;
  s.param("b")[0] = 0.5f;
  AdamWParams hp{0.1, 0.9, 0.95, 1e-8, 0.1};
  s.grad("w")[0] = 0.5f;
  s.grad("w")[1] = -1.0f;
  s.grad("b")[0] = 2.0f;
  adamw_update(s, hp, 1);
  // step 1: mhat = g, vhat = g², update = sign(g) (up to eps) + wd p
  EXPECT_NEAR(s.param("w")[0], 1.0 - 0.1 * (1.0 + 0.1 * 1.0), 1e-6);     // 0.89
  EXPECT_NEAR(s.param("w")[1], -2.0 - 0.1 * (-1.0 + 0.1 * -2.0), 1e-6);  // -1.88
  EXPECT_NEAR(s.param("b")[0], 0.5 - 0.1 * 1.0, 1e-6);                   // 0.4
  // step 2 with g = 0.25 on w[0]: m = 0.9·0.05+0.025... computed in double here
  s.grad("w")[0] = 0.25f;
  adamw_update(s, hp, 2);
  const double m = 0.9 * 0.05 + 0.1 * 0.25, v = 0.95 * 0.0125 + 0.05 * 0.0625;
  const double mhat = m / (1 - 0.81), vhat = v / (1 - 0.9025);
  EXPECT_NEAR(s.param("w")[0], 0.89 - 0.1 * (mhat / (std::sqrt(vhat) + 1e-8) + 0.1 * 0.89), 1e-6);
}

// The fused options must give exactly what the separate passes give:
// scale_grads(f) then a plain update, and the gradients zeroed afterwards.
TEST(AdamW, FusedScaleAndZeroMatchSeparatePasses) {
  auto make = [] {
    ParamStore s;
    s.add("w", {37, 129}, ParamClass::replicated);
    s.add("b", {129}, ParamClass::replicated);
    s.finalize(cpu_backend());
    for (const char* n : {"w", "b"}) {
      const int64_t cnt = std::string(n) == "w" ? 37 * 129 : 129;
      for (int64_t i = 0; i < cnt; ++i) {
        s.param(n)[i] = float(std::sin(0.37 * double(i)));
        s.grad(n)[i] = float(std::cos(0.11 * double(i))) * (i % 7 == 0 ? 30.0f : 0.5f);
      }
    }
    return s;
  };
  AdamWParams hp{3e-3, 0.9, 0.95, 1e-8, 0.1};
  ParamStore a = make(), b = make();
  const float f = 0.3712f;
  scale_grads(a, f);
  adamw_update(a, hp, 3);
  adamw_update(b, hp, 3, AdamWStepOptions{f, true});
  for (const char* n : {"w", "b"}) {
    const int64_t cnt = std::string(n) == "w" ? 37 * 129 : 129;
    for (int64_t i = 0; i < cnt; ++i) {
      ASSERT_EQ(a.param(n)[i], b.param(n)[i]) << n << "[" << i << "]";
      ASSERT_EQ(a.adam_m(n)[i], b.adam_m(n)[i]) << n << "[" << i << "]";
      ASSERT_EQ(a.adam_v(n)[i], b.adam_v(n)[i]) << n << "[" << i << "]";
      ASSERT_EQ(b.grad(n)[i], 0.0f) << n << "[" << i << "]";
      ASSERT_NE(a.grad(n)[i], 0.0f) << n << "[" << i << "]";  // without the option g is kept
    }
  }
}

TEST(Reduce, DeterministicSumMatchesDouble) {
  std::vector<float> x(100003);
  double ref = 0, ref2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = float(std::sin(double(i))) * 3.0f;
    ref += x[i];
    ref2 += double(x[i]) * x[i];
  }
  EXPECT_NEAR(deterministic_sum(x.data(), int64_t(x.size())), ref, 1e-8 * std::fabs(ref2));
  EXPECT_NEAR(deterministic_sum_squares(x.data(), int64_t(x.size())), ref2, 1e-10 * ref2);
  EXPECT_EQ(deterministic_sum(x.data(), 0), 0.0);
}
