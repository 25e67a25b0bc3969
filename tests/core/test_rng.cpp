#include <gtest/gtest.h>

#include <cmath>

#include "finemoe/rng.hpp"

using namespace finemoe;

// Philox4x32-10 known-answer vector (Random123 kat_vectors: ctr = key = 0).
TEST(Rng, PhiloxKnownAnswer) {
  auto r = philox4x32({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

TEST(Rng, RandomAccessEqualsSequential) {
  Rng a(7, 3), b(7, 3);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.u64_at(uint64_t(i)));
}

TEST(Rng, SplitStreamsDiffer) {
  Rng root(1);
  Rng x = root.split(1), y = root.split(2);
  int same = 0;
  for (int i = 0; i < 1000; ++i) same += x.u64_at(i) == y.u64_at(i);
  EXPECT_EQ(same, 0);
  EXPECT_EQ(root.split(5).u64_at(9), Rng(1).split(5).u64_at(9));
}

TEST(Rng, UniformAndTruncatedNormalMoments) {
  Rng r(42);
  double s = 0, s2 = 0, mx = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double z = r.truncated_normal();
    s += z;
    s2 += z * z;
    mx = std::max(mx, std::fabs(z));
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  // Variance of N(0,1) truncated to ±2: 1 - 2·2·φ(2)/(Φ(2)-Φ(-2)) = 0.7737
  EXPECT_NEAR(s2 / n, 0.7737, 0.01);
  EXPECT_LE(mx, 2.0);
  double u = 0;
  for (int i = 0; i < n; ++i) u += r.uniform();
  EXPECT_NEAR(u / n, 0.5, 0.005);
}
