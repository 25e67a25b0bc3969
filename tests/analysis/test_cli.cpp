// The whole program: the paper's Table 2 row from --law paper, and recovery of
// a known law from a directory of metrics.h5 runs with every output written.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "analyze.hpp"
#include "finemoe/error.hpp"
#include "fixtures.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

std::vector<std::map<std::string, double>> read_csv(const fs::path& p) {
  std::ifstream f(p);
  std::string line;
  std::vector<std::string> head;
  std::getline(f, line);
  std::stringstream hs(line);
  for (std::string c; std::getline(hs, c, ',');) head.push_back(c);
  std::vector<std::map<std::string, double>> rows;
  while (std::getline(f, line)) {
    std::stringstream ls(line);
    std::map<std::string, double> row;
    size_t i = 0;
    for (std::string c; std::getline(ls, c, ',') && i < head.size(); ++i) {
      char* end = nullptr;
      double v = std::strtod(c.c_str(), &end);
      row[head[i]] = c.empty() || *end != '\0' ? NAN : v;  // text columns read as NaN
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

TEST(Cli, PaperLawReproducesTable2AndGrowingG) {
  fs::path dir = temp_dir("paper");
  ASSERT_EQ(run_cli({"--law", "paper", "--optimal", "3e18,1e20,1.93e20,1e21,1e22,4e23,5e24,1e25", "--out",
                     dir.string(), "--no-plots"}),
            finemoe::kExitOk);
  auto rows = read_csv(dir / "optimal.csv");
  ASSERT_EQ(rows.size(), 8u);
  const auto& r = rows[2];  // 1.93e20: SCIENCE.md's 64×1B row
  std::printf("1.93e20: n_blocks %.3f d %.1f N_active %.4g G %g D %.4g loss %.4f multiplier %.3g\n", r.at("n_blocks"),
              r.at("d_model"), r.at("N_active"), r.at("G"), r.at("D"), r.at("loss"), r.at("compute_multiplier"));
  EXPECT_EQ(r.at("G"), 16);
  EXPECT_NEAR(r.at("N_active") / 1e9, 1.0, 0.02);
  EXPECT_NEAR(r.at("D") / 28.94e9, 1.0, 0.02);
  EXPECT_NEAR(r.at("loss") / 2.491, 1.0, 0.02);
  EXPECT_NEAR(r.at("budget") / 1.93e20, 1.0, 1e-9);
  // Optimal G grows with budget: ~8 near 3e18, 16 to ~1e21, 32 to ~4e23, 64 past 5e24.
  const double expect_g[] = {8, 16, 16, 16, 32, 32, 64, 64};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].at("G"), expect_g[i]) << "budget " << rows[i].at("budget");
    if (i) EXPECT_LT(rows[i].at("loss"), rows[i - 1].at("loss"));
    // MoE beats dense: the dense law needs more compute for the same loss.
    EXPECT_GT(rows[i].at("compute_multiplier"), 1.0);
  }
  // The rounded Table 1 set gives D and F a few per cent low — still G = 16.
  ASSERT_EQ(run_cli({"--law", "paper-rounded", "--optimal", "1.93e20", "--out", dir.string(), "--no-plots", "-q"}),
            finemoe::kExitOk);
  auto rr = read_csv(dir / "optimal.csv");
  EXPECT_EQ(rr[0].at("G"), 16);
  EXPECT_NEAR(rr[0].at("loss") / 2.491, 1.0, 0.02);
  fs::remove_all(dir);
}

TEST(Cli, RecoversKnownLawFromRunDirectory) {
  fs::path dir = temp_dir("recover");
  const Law truth = paper_law();
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0.0, 0.003);
  int k = 0;
  for (int64_t nb : {4, 6, 8, 11, 16})
    for (double D : {2e9, 8e9, 3.2e10})
      for (int64_t G : {1, 2, 4, 8, 16}) {
        FixtureRun f;
        f.n_blocks = nb;
        f.d_model = 64 * nb;
        f.G = G;
        f.D = D;
        f.final_loss = truth.loss(finemoe::law_N(64.0 * nb, nb, 64), D, G) * std::exp(noise(rng));
        write_run(dir / "runs", "r" + std::to_string(k++), f);
      }
  const fs::path out = dir / "out";
  ASSERT_EQ(run_cli({(dir / "runs").string(), "--out", out.string(), "--fix-c", "0.472", "--bootstrap", "16",
                     "--threads", "2", "--holdout", "largest-n", "--optimal", "1.93e20", "-q"}),
            finemoe::kExitOk);
  for (const char* f : {"fit.json", "runs.csv", "optimal.csv", "report.md"}) EXPECT_TRUE(fs::exists(out / f)) << f;
  auto runs = read_csv(out / "runs.csv");
  EXPECT_EQ(runs.size(), 75u);
  std::ifstream jf(out / "fit.json");
  std::string json((std::istreambuf_iterator<char>(jf)), {});
  EXPECT_NE(json.find("\"intervals_95\""), std::string::npos);
  EXPECT_NE(json.find("\"holdout\""), std::string::npos);
  EXPECT_NE(json.find("\"residuals\""), std::string::npos);
  if (fs::exists("/usr/bin/gnuplot")) {
    for (const char* p : {"loss_curves", "fit_vs_observed", "loss_vs_n", "optimal_g", "moe_vs_dense"}) {
      EXPECT_TRUE(fs::exists(out / "plots" / (std::string(p) + ".png"))) << p;
      EXPECT_TRUE(fs::exists(out / "plots" / (std::string(p) + ".svg"))) << p;
    }
  }
  // The same analysis in-process, to check numbers.
  AnalyzeOptions o;
  o.runs_dir = (dir / "runs").string();
  o.out_dir = out.string();
  o.fit.fix_c = true;
  o.fit.c_value = 0.472;
  o.boot.replicates = 0;
  o.holdout = "largest-n";
  o.optimal = "1.93e20";
  o.plots = false;
  o.quiet = true;
  Analysis a = run_analysis(o);
  ASSERT_EQ(a.fits.size(), 1u);
  const auto& f = a.fits[0];
  ASSERT_TRUE(f.fit.ok) << f.fit.message;
  EXPECT_EQ(f.options.form, LawForm::Fine);
  std::printf("recovered: %s  rmse %.4g; holdout largest-n RMSE %.4g MARE %.4g\n", law_to_string(f.fit.law).c_str(),
              f.fit.rmse, f.holdout.rmse, f.holdout.mare);
  // Stated tolerances at 0.3 % noise: exponents ±0.015, γ ±0.1, in-sample
  // RMSE at the noise level (0.3 % of ~3 nats ≈ 0.009).
  EXPECT_NEAR(f.fit.law.alpha, truth.alpha, 0.015);
  EXPECT_NEAR(f.fit.law.beta, truth.beta, 0.015);
  EXPECT_NEAR(f.fit.law.gamma, truth.gamma, 0.1);
  EXPECT_LT(f.fit.rmse, 0.012);
  ASSERT_TRUE(f.holdout.ok) << f.holdout.message;
  EXPECT_LT(f.holdout.mare, 0.01);
  ASSERT_TRUE(a.optimal.present);
  EXPECT_EQ(a.optimal.rows[0].best.G, 16);  // the recovered law gives the paper's answer
  fs::remove_all(dir);
}
