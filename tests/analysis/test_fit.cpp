// Fitting: recovery of known coefficients from synthetic points (in memory),
// bootstrap coverage, holdout, and the identifiability messages.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "bootstrap.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
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

TEST(Fit, FixedCRecoversExponentsUnderNoise) {
  const Law truth = paper_law();
  auto pts = to_points(synthetic_runs(truth, 0.005, 3));
  FitOptions o;
  o.fix_c = true;
  o.c_value = truth.c;
  FitResult r = fit_law(pts, o);
  ASSERT_TRUE(r.ok) << r.message;
  print_law("fixed c", r.law);
  EXPECT_DOUBLE_EQ(r.law.c, truth.c);
  EXPECT_NEAR(r.law.alpha, truth.alpha, 0.01);
  EXPECT_NEAR(r.law.beta, truth.beta, 0.01);
  EXPECT_NEAR(r.law.gamma, truth.gamma, 0.1);
  EXPECT_NEAR(r.law.a / truth.a, 1.0, 0.25);
  EXPECT_NEAR(r.law.b / truth.b, 1.0, 0.25);
  // The law itself, where it matters: extrapolated 10x beyond the largest N.
  const double N = 10 * finemoe::law_N(1024, 16, 64), D = 1e11;
  EXPECT_NEAR(r.law.loss(N, D, 8) / truth.loss(N, D, 8), 1.0, 0.01);
}

TEST(Fit, BootstrapIntervalsCoverTheTruth) {
  const Law truth = paper_law();
  auto pts = to_points(synthetic_runs(truth, 0.005, 4));
  FitOptions o;
  FitResult r = fit_law(pts, o);
  ASSERT_TRUE(r.ok) << r.message;
  BootstrapOptions bo;
  bo.replicates = 30;
  bo.fraction = 1.0;
  bo.threads = 2;
  bo.progress = false;
  BootstrapResult b = bootstrap_fit(pts, o, r.law, bo);
  EXPECT_EQ(b.requested, 30);
  EXPECT_GE(b.succeeded, 28);
  const auto names = law_param_names();
  const auto tv = law_values(truth);
  for (size_t k = 0; k < names.size(); ++k) {
    std::printf("%-6s truth %-8.4g fit %-8.4g 95%% [%.4g, %.4g]\n", names[k].c_str(), tv[k], law_values(r.law)[k],
                b.intervals[k].lo, b.intervals[k].hi);
    if (names[k] == "alpha" || names[k] == "beta" || names[k] == "gamma" || names[k] == "c") {
      EXPECT_LE(b.intervals[k].lo, tv[k]) << names[k];
      EXPECT_GE(b.intervals[k].hi, tv[k]) << names[k];
      EXPECT_LT(b.intervals[k].lo, b.intervals[k].hi) << names[k];
    }
  }
  // Same seed, other thread count: identical replicates.
  bo.threads = 1;
  BootstrapResult b1 = bootstrap_fit(pts, o, r.law, bo);
  ASSERT_EQ(b1.laws.size(), b.laws.size());
  EXPECT_DOUBLE_EQ(b1.intervals[1].lo, b.intervals[1].lo);
}

TEST(Fit, HoldoutLargestNReportsHeldOutError) {
  const Law truth = paper_law();
  auto pts = to_points(synthetic_runs(truth, 0.005, 5));
  FitOptions o;
  o.fix_c = true;
  o.c_value = truth.c;
  HoldoutResult h = holdout_fit(pts, "largest-n", o, 1);
  ASSERT_TRUE(h.ok) << h.message;
  std::printf("holdout largest-n: %d train, %d test runs, RMSE %.4g, MARE %.4g\n", h.train_runs, h.test_runs, h.rmse,
              h.mare);
  EXPECT_EQ(h.test_runs, 15);  // the 15 runs of the largest shape (3 D × 5 G)
  EXPECT_EQ(h.train_runs, 60);
  EXPECT_GT(h.rmse, 0.0);
  EXPECT_LT(h.mare, 0.02);  // 0.5 % noise, extrapolating one size step
  HoldoutResult hr = holdout_fit(pts, "random:0.2", o, 7);
  ASSERT_TRUE(hr.ok) << hr.message;
  EXPECT_EQ(hr.test_runs, 15);
  EXPECT_LT(hr.mare, 0.02);
  EXPECT_THROW(holdout_fit(pts, "smallest", o, 1), finemoe::ConfigError);
}

TEST(Fit, ChinchillaFormRecoversDenseLaw) {
  const Law truth = paper_dense_law();
  std::vector<FitPoint> pts;
  int i = 0;
  for (double N : {1e7, 3e7, 1e8, 3e8, 1e9})
    for (double D : {1e9, 4e9, 1.6e10, 6.4e10}) pts.push_back({N, D, 1, truth.loss(N, D), i++});
  FitOptions o;
  o.form = LawForm::Chinchilla;
  o.huber_delta = 1e-3;  // Chinchilla's δ
  FitResult r = fit_law(pts, o);
  ASSERT_TRUE(r.ok) << r.message;
  print_law("chinchilla", r.law);
  EXPECT_EQ(r.law.g, 0.0);
  EXPECT_NEAR(r.law.alpha, truth.alpha, 0.01);
  EXPECT_NEAR(r.law.beta, truth.beta, 0.01);
  EXPECT_NEAR(r.law.c, truth.c, 0.05);
  EXPECT_LT(r.rmse, 1e-3);
}

TEST(Fit, DegenerateInputsSayWhy) {
  FitOptions o;
  EXPECT_NE(identifiability_problem({}, o).find("no usable runs"), std::string::npos);
  std::vector<FitPoint> same_n;
  for (int i = 0; i < 12; ++i) same_n.push_back({1e8, 1e9 * (1 + i), double(1 << (i % 4)), 3.0 - 0.01 * i, i});
  EXPECT_NE(identifiability_problem(same_n, o).find("same N"), std::string::npos);
  FitResult r = fit_law(same_n, o);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("same N"), std::string::npos);
  std::vector<FitPoint> one_g;
  for (int i = 0; i < 12; ++i) one_g.push_back({1e8 * (1 + i % 3), 1e9 * (1 + i), 4, 3.0 - 0.01 * i, i});
  EXPECT_NE(identifiability_problem(one_g, o).find("same G"), std::string::npos);
  o.form = LawForm::Chinchilla;
  EXPECT_EQ(identifiability_problem(one_g, o), "");
  std::vector<FitPoint> few(one_g.begin(), one_g.begin() + 3);
  EXPECT_NE(identifiability_problem(few, o).find("need at least"), std::string::npos);
}
