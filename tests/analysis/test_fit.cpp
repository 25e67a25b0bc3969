// Fitting: recovery of known coefficients from synthetic points (in memory),
// bootstrap coverage, holdout, and the identifiability messages.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "bootstrap.hpp"
#include "fit.hpp"
#include "synthetic.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {
void print_law(const char* what, const Law& l) {
  std::printf("%s: %s\n", what, law_to_string(l).c_str());
}
}  // namespace

TEST(Fit, RecoversFineLawWithoutNoise) {
  const Law truth = paper_law();
  auto pts = to_points(synthetic_runs(truth, 0.0, 1));
  FitOptions o;
  auto t0 = std::chrono::steady_clock::now();
  FitResult r = fit_law(pts, o);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok) << r.message;
  print_law("fit", r.law);
  std::printf("starts=%d usable=%d rmse=%.3g obj=%.3g time=%.2fs\n", r.starts, r.usable_starts, r.rmse, r.objective,
              secs);
  EXPECT_LT(r.rmse, 1e-4);
  EXPECT_NEAR(r.law.alpha, truth.alpha, 0.01);
  EXPECT_NEAR(r.law.beta, truth.beta, 0.01);
  EXPECT_NEAR(r.law.gamma, truth.gamma, 0.02);
  EXPECT_NEAR(r.law.c, truth.c, 0.02);
}

TEST(Fit, RecoversFineLawWithNoiseAndBfgsAgrees) {
  const Law truth = paper_law();
  auto pts = to_points(synthetic_runs(truth, 0.005, 2));
  FitOptions o;
  FitResult lm = fit_law(pts, o);
  ASSERT_TRUE(lm.ok) << lm.message;
  o.solver = SolverKind::Bfgs;
  FitResult bf = fit_law(pts, o);
  ASSERT_TRUE(bf.ok) << bf.message;
  print_law("lm  ", lm.law);
  print_law("bfgs", bf.law);
  std::printf("rmse lm=%.4g bfgs=%.4g obj lm=%.6g bfgs=%.6g\n", lm.rmse, bf.rmse, lm.objective, bf.objective);
  // Noise σ = 0.5 % of the loss ≈ 0.012 nats: the fit's RMSE must be at that level.
  EXPECT_LT(lm.rmse, 0.02);
  EXPECT_NEAR(lm.objective, bf.objective, 1e-3 * lm.objective);
}
