// Compute-optimal allocation under a law.
//
// MoE: the shape is tied by d_model = aspect·n_blocks (paper: 64); for a
// budget F and granularity G, D = F / law_flops_per_token(d, n_blocks, E, G)
// and L(law_N(d, n_blocks, E), D, G) is minimised over continuous n_blocks;
// then the best G of the candidate list wins.
// Dense: L(N, D) with F = 6·N·D, minimised over N (no shape constraint).
#pragma once
#include <vector>

#include "law.hpp"

namespace finemoe::analysis {

struct OptimalOptions {
  double E = 64;
  double aspect = 64;                                         // d_model / n_blocks
  std::vector<double> granularities = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  double min_blocks = 1, max_blocks = 1e5;                    // search range of n_blocks
};

struct OptimalPoint {
  double budget = 0, n_blocks = 0, d_model = 0, N_active = 0, N_total = 0, G = 1, D = 0;
  double tokens_per_active = 0, loss = 0;
  bool at_range_edge = false;  // optimum hit min/max_blocks: widen the range
};

struct OptimalRow {
  OptimalPoint best;                  // over G
  std::vector<OptimalPoint> per_g;    // one per candidate G (same order)
  double dense_loss = 0;              // dense-law optimal loss at the same F
  double dense_compute = 0;           // dense F needed to reach best.loss (inf if unreachable)
  double multiplier = 0;              // dense_compute / budget
  double multiplier_g1 = 0;           // the same for the best G = 1 (vanilla MoE) shape; NaN without a G = 1 candidate
  bool extrapolated = false;          // budget, N or D more than 10x beyond the fitted runs
  std::string extrapolated_why;       // which of them, e.g. "F 120x, N 15x"
  bool extrapolated_g1 = false;       // the same for the G = 1 optimum (multiplier_g1's shape)
  std::string extrapolated_g1_why;
};

OptimalPoint optimal_for_g(const Law& law, double F, double G, const OptimalOptions& o);
OptimalRow optimal_for_budget(const Law& law, double F, const OptimalOptions& o, const Law* dense);

// Dense law, F = 6·N·D: optimal loss, and the compute that reaches `loss`.
double dense_optimal_loss(const Law& dense, double F, double* N_opt = nullptr);
double dense_compute_for_loss(const Law& dense, double loss);

// "1e18,1e20" or "log:1e18:1e25:15" (15 log-spaced budgets).
std::vector<double> parse_budgets(const std::string& spec);

}  // namespace finemoe::analysis
