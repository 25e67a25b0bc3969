// Compute-optimal allocation under the published law: SCIENCE.md's Table 2 row
// and the pattern of optimal G vs budget.
#include <gtest/gtest.h>

#include <cmath>

#include "finemoe/counting.hpp"
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
