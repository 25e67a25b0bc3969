// The G profile (g_profile.hpp): gamma from the within-(N, D) shape of loss
// vs G. Recovers a known gamma from the law itself and from cells whose N and
// D structure no law of the paper's form describes; refuses grids that cannot
// place it; flags a noisy grid as not identified; reaches report.md and
// fit.json through the driver.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "analyze.hpp"
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

TEST(GProfile, ReportAndJsonCarryIt) {
  const fs::path dir = fs::temp_directory_path() / ("finemoe_gprofile_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto pts = structured_cells(1.1, 0.002, 3);
  const std::string csv = (dir / "cells.csv").string();
  {
    std::ofstream f(csv);
    f << "run,N,D,loss,G,E\n";
    for (const auto& p : pts)
      f << "r" << p.group << "," << p.N << "," << p.D << "," << p.loss << "," << p.G << ",8\n";
  }
  AnalyzeOptions o;
  o.points = csv;
  o.out_dir = (dir / "out").string();
  o.plots = false;
  o.quiet = true;
  o.boot.replicates = 40;
  o.boot.threads = 2;
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
