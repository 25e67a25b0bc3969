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
  s.finalize();
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
