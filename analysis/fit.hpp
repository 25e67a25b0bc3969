// Fitting a scaling law to (N, D, G, loss) points with Ceres.
//
// Objective: Σ Huber_δ(log L_pred − log L_obs) + λ·|θ|²  (θ: the logsumexp
// parameters of costs.hpp), minimised from a grid of initial points; the start
// with the lowest final objective wins. Levenberg–Marquardt on the
// least-squares form with Ceres' HuberLoss is the default; BFGS (the paper's
// choice) minimises exactly the same objective through a GradientProblem.
#pragma once
#include <string>
#include <vector>

#include "law.hpp"

namespace finemoe::analysis {

struct FitPoint {
  double N = 0, D = 0, G = 1, loss = 0;
  int group = 0;       // which run the point comes from (unit of bootstrap/holdout)
  double F = 0;        // training FLOPs of the point (extrapolation checks, f-above holdout); 0 unknown
  double weight = 1;   // multiplies the point's Huber term (--points 'weight' column)
  double loss_se = 0;  // standard error of `loss` (final evaluation); 0 unknown. Misfit guardrail only.
};

enum class LawForm { Fine, Chinchilla };
enum class SolverKind { LevenbergMarquardt, Bfgs };

struct FitOptions {
  LawForm form = LawForm::Fine;
  double huber_delta = 0.1;    // paper 0.1; Chinchilla 1e-3
  bool fix_c = false;
  double c_value = 0.0;        // used when fix_c (must be > 0)
  // Fine form only: gamma held at gamma_value (--fix-gamma VALUE). With
  // gamma_from_profile (--fix-gamma profile), bootstrap replicate i holds gamma
  // at gamma_replicates[i] (the G profile's own bootstrap replicate i, so
  // gamma's uncertainty carries into the intervals of the other coefficients;
  // a NaN or missing entry fails that replicate), and the holdout's training fit at the G
  // profile of the training runs (g_profile.hpp).
  bool fix_gamma = false;
  double gamma_value = 0.0;
  bool gamma_from_profile = false;
  std::vector<double> gamma_replicates;
  double l2 = 1e-8;            // tiny weight decay on θ (keeps flat directions finite)
  SolverKind solver = SolverKind::LevenbergMarquardt;
  int max_iterations = 400;
  bool full_grid = true;       // false: a 16-point coarse grid (bootstrap refits)
  std::vector<Law> extra_starts;  // tried in addition to the grid
};

struct FitResult {
  bool ok = false;
  std::string message;         // why not ok
  Law law;
  double objective = 0;        // Σ Huber_δ(log residual), without the L2 term
  double rmse = 0;             // sqrt(mean (L_pred − L_obs)²), in nats
  double rmse_log = 0;         // same on log loss
  double mare = 0;             // mean |L_pred − L_obs| / L_obs
  std::vector<double> predicted;  // per point
  int starts = 0, usable_starts = 0;
};

const char* solver_name(SolverKind s);
const char* form_name(LawForm f);
int n_free_params(const FitOptions& o);

// Empty when the points can identify the law, else a sentence saying why not.
std::string identifiability_problem(const std::vector<FitPoint>& pts, const FitOptions& o);

FitResult fit_law(const std::vector<FitPoint>& pts, const FitOptions& o);

// Metrics of an arbitrary law on points (held-out evaluation).
void evaluate_law(const Law& law, const std::vector<FitPoint>& pts, double huber_delta, FitResult& out);

}  // namespace finemoe::analysis
