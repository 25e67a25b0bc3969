// The G profile (g_profile.hpp): gamma from the within-(N, D) shape of loss
// vs G. Recovers a known gamma from the law itself and from cells whose N and
// D structure no law of the paper's form describes; refuses grids that cannot
// place it; flags a noisy grid as not identified; reaches report.md and
// fit.json through the driver. --fix-gamma (a value, or the profile's gamma
// with its bootstrap replicates paired to the law's) holds gamma in both solvers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "analyze.hpp"
#include "finemoe/error.hpp"
#include "fixtures.hpp"
#include "g_profile.hpp"
#include "synthetic.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

BootstrapOptions boot(int replicates) {
  BootstrapOptions bo;
  bo.replicates = replicates;
  bo.progress = false;
  return bo;
}

// Cells (one per size x D) whose log loss is m_cell + s·G^-gamma: the offsets
// m_cell jump around with no power law in N or D, and the amplitude s is the
// same in every cell (it does not shrink like N^-alpha), so the law's form
// misfits these runs while the G curve is exact up to the noise.
std::vector<FitPoint> structured_cells(double gamma, double sigma, uint64_t seed, int sizes = 4, int budgets = 3,
                                       std::vector<double> Gs = {1, 2, 4, 8, 16}) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, sigma);
  std::uniform_real_distribution<double> offset(std::log(2.5), std::log(4.0));
  std::vector<FitPoint> pts;
  for (int n = 0; n < sizes; ++n)
    for (int d = 0; d < budgets; ++d) {
      const double m = offset(rng);
      for (double G : Gs) {
        FitPoint p{1e5 * std::pow(4.0, n), 1e6 * std::pow(2.0, d), G, 0, int(pts.size())};
        p.loss = std::exp(m + 0.05 * std::pow(G, -gamma) + noise(rng));
        pts.push_back(p);
      }
    }
  return pts;
}

}  // namespace

TEST(GProfile, RecoversTheLawsGammaOnItsOwnGrid) {
  // The paper's law (gamma = 0.58), 0.3 % noise: at fixed N and D it is exactly
  // m + s·G^-gamma in loss, and nearly so in log loss (loss differences of a
  // few % between G).
  const Law truth = paper_law();
  const auto pts = to_points(synthetic_runs(truth, 0.003, 7));
  const GProfile g = fit_g_profile(pts, boot(100));
  ASSERT_TRUE(g.ok) << g.message;
  EXPECT_EQ(g.cells, 15);
  EXPECT_EQ(g.points, 75);
  EXPECT_NEAR(g.gamma, truth.gamma, 0.1);
  ASSERT_TRUE(g.has_interval);
  EXPECT_EQ(g.succeeded, 100);
  EXPECT_LE(g.interval.lo, truth.gamma);
  EXPECT_GE(g.interval.hi, truth.gamma);
  EXPECT_TRUE(g.identified) << g.verdict;
  EXPECT_FALSE(g.on_bound);
}

TEST(GProfile, RecoversGammaWhereTheLawsNAndDFormDoesNotHold) {
  for (double gamma : {0.6, 1.1}) {
    const auto pts = structured_cells(gamma, 0.002, 3);
    const GProfile g = fit_g_profile(pts, boot(100));
    ASSERT_TRUE(g.ok) << g.message;
    EXPECT_EQ(g.cells, 12);
    EXPECT_NEAR(g.gamma, gamma, 0.15 * gamma) << "truth " << gamma;
    EXPECT_LE(g.interval.lo, gamma);
    EXPECT_GE(g.interval.hi, gamma);
    EXPECT_TRUE(g.identified) << g.verdict;
    // The mean fitted drop from G = 1 to 16 is 0.05·(1 − 16^-gamma).
    EXPECT_NEAR(g.mean_gain, 0.05 * (1 - std::pow(16.0, -gamma)), 0.01);
  }
}

TEST(GProfile, NoisyGridIsNotIdentified) {
  // Two cells, noise (5 %) larger than the whole G effect (5 % of log loss):
  // the fit returns a gamma, the bootstrap cannot place it.
  const auto pts = structured_cells(0.8, 0.05, 11, 1, 2);
  const GProfile g = fit_g_profile(pts, boot(100));
  ASSERT_TRUE(g.ok) << g.message;
  EXPECT_FALSE(g.identified) << g.verdict;
  EXPECT_NE(g.verdict.find("not identified"), std::string::npos) << g.verdict;
}

TEST(GProfile, BootstrapResamplesWholeCells) {
  // Two cells of exactly 3 G each: a draw of runs would leave most cells with
  // fewer than 3 distinct G (unfittable); a draw of cells never does.
  const auto pts = structured_cells(1.0, 0.002, 4, 1, 2, {1, 2, 4});
  const GProfile g = fit_g_profile(pts, boot(50));
  ASSERT_TRUE(g.ok) << g.message;
  EXPECT_EQ(g.succeeded, 50);
  ASSERT_EQ(g.replicate_gamma.size(), 50u);
  for (double x : g.replicate_gamma) EXPECT_TRUE(std::isfinite(x));
  // Replicates depend on the seed only.
  EXPECT_EQ(fit_g_profile(pts, boot(50)).replicate_gamma, g.replicate_gamma);
}

TEST(GProfile, RefusesGridsThatCannotPlaceGamma) {
  // Two G per cell: no cell has a shape.
  GProfile g = fit_g_profile(structured_cells(1.0, 0.002, 1, 3, 3, {1, 4}), boot(0));
  EXPECT_FALSE(g.ok);
  EXPECT_NE(g.message.find("3 or more distinct G"), std::string::npos) << g.message;
  // One cell of three G: three points for three coefficients.
  g = fit_g_profile(structured_cells(1.0, 0.002, 1, 1, 1, {1, 2, 4}), boot(0));
  EXPECT_FALSE(g.ok);
  EXPECT_NE(g.message.find("need one more"), std::string::npos) << g.message;
  // Without a bootstrap the verdict says it was not checked.
  g = fit_g_profile(structured_cells(1.0, 0.002, 1), boot(0));
  ASSERT_TRUE(g.ok);
  EXPECT_FALSE(g.has_interval);
  EXPECT_FALSE(g.identified);
  EXPECT_NE(g.verdict.find("not checked"), std::string::npos) << g.verdict;
}

namespace {

// A --points CSV of pts (E = 8) in dir, and options that fit it quietly.
AnalyzeOptions points_options(const fs::path& dir, const std::vector<FitPoint>& pts) {
  fs::create_directories(dir);
  const std::string csv = (dir / "cells.csv").string();
  std::ofstream f(csv);
  f.precision(17);
  f << "run,N,D,loss,G,E\n";
  for (const auto& p : pts) f << "r" << p.group << "," << p.N << "," << p.D << "," << p.loss << "," << p.G << ",8\n";
  AnalyzeOptions o;
  o.points = csv;
  o.out_dir = (dir / "out").string();
  o.plots = false;
  o.quiet = true;
  o.boot.replicates = 40;
  o.boot.threads = 2;
  return o;
}

}  // namespace

TEST(GProfile, FixGammaHoldsTheValueInBothSolvers) {
  const auto pts = to_points(synthetic_runs(paper_law(), 0.003, 5));
  FitOptions fo;
  fo.form = LawForm::Fine;
  const int free_all = n_free_params(fo);
  fo.fix_gamma = true;
  fo.gamma_value = 0.7;
  EXPECT_EQ(n_free_params(fo), free_all - 1);
  const FitResult lm = fit_law(pts, fo);
  ASSERT_TRUE(lm.ok) << lm.message;
  EXPECT_EQ(lm.law.gamma, 0.7);
  fo.solver = SolverKind::Bfgs;
  const FitResult bf = fit_law(pts, fo);
  ASSERT_TRUE(bf.ok) << bf.message;
  EXPECT_EQ(bf.law.gamma, 0.7);
  // Same objective, same optimum (as the two solvers agree without fixing).
  EXPECT_NEAR(bf.objective, lm.objective, 1e-6 * lm.objective + 1e-12);
  EXPECT_NEAR(bf.law.alpha, lm.law.alpha, 2e-3);
  EXPECT_NEAR(bf.law.beta, lm.law.beta, 2e-3);
  // gamma held away from the truth (0.58) costs objective: the fit used the value.
  fo.solver = SolverKind::LevenbergMarquardt;
  fo.fix_gamma = false;
  const FitResult free_fit = fit_law(pts, fo);
  ASSERT_TRUE(free_fit.ok);
  EXPECT_GT(lm.objective, free_fit.objective);
  fo.fix_gamma = true;
  fo.gamma_value = 5;
  EXPECT_FALSE(fit_law(pts, fo).ok);
  EXPECT_EQ(run_cli({"--points", "x.csv", "--fix-gamma", "5"}), finemoe::kExitUsage);
  EXPECT_EQ(run_cli({"--points", "x.csv", "--fix-gamma", "prof"}), finemoe::kExitUsage);
}

TEST(GProfile, FixGammaProfileTakesTheProfilesReplicates) {
  const fs::path dir = temp_dir("gprofile_fix");
  AnalyzeOptions o = points_options(dir, to_points(synthetic_runs(paper_law(), 0.003, 9)));
  o.fix_gamma_profile = true;
  o.holdout = "largest-n";
  const Analysis a = run_analysis(o);
  ASSERT_TRUE(a.g_profile.ok) << a.g_profile.message;
  ASSERT_FALSE(a.fits.empty());
  const FitReport& f = a.fits[0];
  ASSERT_TRUE(f.fit.ok) << f.fit.message;
  EXPECT_EQ(f.fit.law.gamma, a.g_profile.gamma);
  EXPECT_TRUE(f.options.gamma_from_profile);
  EXPECT_FALSE(a.gamma_note.empty());
  // Law replicate i held gamma at the profile's replicate i: when every
  // replicate of both succeeds, the two intervals are the same numbers.
  ASSERT_TRUE(f.has_bootstrap);
  ASSERT_EQ(f.boot.succeeded, a.g_profile.succeeded);
  EXPECT_DOUBLE_EQ(f.boot.intervals[5].lo, a.g_profile.interval.lo);  // law_param_names()[5] = gamma
  EXPECT_DOUBLE_EQ(f.boot.intervals[5].hi, a.g_profile.interval.hi);
  EXPECT_LT(f.boot.intervals[5].lo, f.boot.intervals[5].hi);
  EXPECT_TRUE(f.holdout.ok) << f.holdout.message;
  for (const auto& fl : f.guard.flags) EXPECT_NE(fl.param, "gamma") << fl.message;
  EXPECT_NE(fit_json(a).find("\"gamma_fixed\": \"profile\""), std::string::npos);
  fs::remove_all(dir);
}

TEST(GProfile, FixGammaProfileWithoutAProfileIsNotFitted) {
  const fs::path dir = temp_dir("gprofile_none");
  // Two G per cell: there is no profile, so no MoE law with gamma from it.
  AnalyzeOptions o = points_options(dir, structured_cells(1.0, 0.002, 1, 3, 3, {1, 4}));
  o.fix_gamma_profile = true;
  const Analysis a = run_analysis(o);
  ASSERT_FALSE(a.fits.empty());
  EXPECT_FALSE(a.fits[0].fit.ok);
  EXPECT_NE(a.fits[0].fit.message.find("--fix-gamma profile"), std::string::npos) << a.fits[0].fit.message;
  fs::remove_all(dir);
}

TEST(GProfile, ReportAndJsonCarryIt) {
  const fs::path dir = temp_dir("gprofile_report");
  const AnalyzeOptions o = points_options(dir, structured_cells(1.1, 0.002, 3));
  const Analysis a = run_analysis(o);
  ASSERT_TRUE(a.has_g_profile);
  EXPECT_NEAR(a.g_profile.gamma, 1.1, 0.15);
  write_outputs(a);
  std::ifstream r(dir / "out" / "report.md");
  const std::string md((std::istreambuf_iterator<char>(r)), {});
  EXPECT_NE(md.find("gamma from the G profile"), std::string::npos);
  const std::string js = fit_json(a);
  const auto at = js.find("\"g_profile\"");
  ASSERT_NE(at, std::string::npos);
  EXPECT_NE(js.find("\"identified\": true", at), std::string::npos) << js.substr(at, 600);
  fs::remove_all(dir);
}
