// Compute-optimal allocation under the published law: SCIENCE.md's Table 2 row
// and the pattern of optimal G vs budget.
#include <gtest/gtest.h>

#include <cmath>

#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "optimal.hpp"

using namespace finemoe::analysis;

TEST(Optimal, PaperTable2Row64x1B) {
  // 64×1B: N_active = 1e9 → compute-optimal at F ≈ 1.93e20 with G = 16.
  OptimalOptions o;
  OptimalRow row = optimal_for_budget(paper_law(), 1.93e20, o, nullptr);
  std::printf("F=%.4g nb=%.3f d=%.1f N_active=%.4g G=%g D=%.4g loss=%.4f\n", row.best.budget, row.best.n_blocks,
              row.best.d_model, row.best.N_active, row.best.G, row.best.D, row.best.loss);
  EXPECT_EQ(row.best.G, 16);
  EXPECT_NEAR(row.best.N_active / 1e9, 1.0, 0.02);
  EXPECT_NEAR(row.best.D / 28.94e9, 1.0, 0.02);
  EXPECT_NEAR(row.best.loss / 2.491, 1.0, 0.02);
  EXPECT_FALSE(row.best.at_range_edge);
}

TEST(Optimal, DenseComputeInvertsDenseOptimalLoss) {
  const Law dense = paper_dense_law();
  double N = 0;
  const double L = dense_optimal_loss(dense, 1e21, &N);
  EXPECT_GT(N, 1e8);
  EXPECT_LT(N, 1e12);
  EXPECT_NEAR(dense_compute_for_loss(dense, L) / 1e21, 1.0, 1e-6);
  EXPECT_TRUE(std::isinf(dense_compute_for_loss(dense, 0.46)));  // below c: unreachable
  // The MoE optimum beats the dense optimum at the same compute.
  OptimalOptions o;
  OptimalRow row = optimal_for_budget(paper_law(), 1e21, o, &dense);
  EXPECT_LT(row.best.loss, row.dense_loss);
  EXPECT_GT(row.multiplier, 1.0);
  EXPECT_NEAR(row.multiplier, row.dense_compute / 1e21, 1e-12);
}

TEST(Optimal, BudgetSpecs) {
  auto b = parse_budgets("log:1e18:1e20:3");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_NEAR(b[1], 1e19, 1e7);
  EXPECT_EQ(parse_budgets("1e18,2e19").size(), 2u);
  EXPECT_THROW(parse_budgets("1e18,abc"), finemoe::ConfigError);
  EXPECT_THROW(parse_budgets("log:1e20:1e18:3"), finemoe::ConfigError);
}
