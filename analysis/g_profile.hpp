// γ from the shape of loss vs G at fixed N and D (the "G profile").
//
// The fine-grained law says that at fixed N and D the loss falls with G as
//   L(G) = c + b/D^β + (a + g/G^γ)/N^α  =  m + s·G^(−γ),
// with m and s set by N and D. The profile fit keeps only that: every cell of
// runs with the same N and D (and ≥ 3 distinct G) gets its own offset m and
// amplitude s, all cells share one γ, and
//   log L = m_cell + s_cell·G^(−γ)        (weighted least squares on log loss)
// is minimised over γ ∈ [0.01, 3] (a 0.01 grid, then golden-section search
// around its best point; m and s are linear, solved per cell for each γ).
//
// Why: on small runs the law's N and D terms can miss the points (runs before
// the power-law regime, a G gain that does not shrink like N^−α), and the full
// fit then trades γ against α, g and a, so the bootstrap cannot place γ even
// when every (N, D) cell shows the same G curve. The profile needs no form for
// N and D; it reads γ from differences within cells. It agrees with the law's
// γ when the law holds (a test checks it); it is reported beside the fit, not
// fed into it.
//
// Bootstrap: cells are the resampled units (a cluster bootstrap): replicate i
// draws round(fraction · n_cells) cells with replacement, seeded by (seed, i)
// as the law's bootstrap. Not the law's run-level draws: drawing 80 % of the
// runs with replacement leaves out about 45 % of the distinct runs, so about
// 40 % of 5-G cells fall below 3 distinct G and drop out of every replicate,
// and the interval would describe that thinner design, not these runs.
//
// Identified when that interval lies within ±50 % of γ, γ is not on the search
// bound, and the bootstrap distribution is not bimodal: the guardrails' rules
// for exponents.
#pragma once
#include <string>
#include <vector>

#include "bootstrap.hpp"
#include "fit.hpp"

namespace finemoe::analysis {

struct GProfile {
  bool ok = false;
  std::string message;           // why not ok
  int cells = 0, points = 0;     // cells with >= 3 distinct G, their points
  int runs = 0;                  // distinct runs among those points
  double gamma = 0;
  double rmse_log = 0;           // of the profile fit on log loss
  double mean_gain = 0;          // mean over cells of log L(G_min) − log L(G_max) of the fit
  bool on_bound = false;         // gamma at 0.01 or 3
  bool has_interval = false;
  int replicates = 0, succeeded = 0;
  ParamInterval interval;        // gamma's bootstrap interval
  std::vector<double> replicate_gamma;  // per replicate index; NaN where it could not be fitted
  double bimodality = 0;         // Sarle's coefficient of the bootstrap gammas (>= 20 refits)
  bool identified = false;
  std::string verdict;           // one sentence: identified, or which rule failed
};

// Points with the same (N, D) form a cell; cells with fewer than 3 distinct G
// are left out. bo.replicates = 0: no interval (then never "identified").
GProfile fit_g_profile(const std::vector<FitPoint>& pts, const BootstrapOptions& bo);

}  // namespace finemoe::analysis
