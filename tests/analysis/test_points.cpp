// moe-analyze --points / --write-points, threshold holdouts, the final-eval
// final loss, --fix-c entropy, extrapolation marks and the dense comparison.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "analyze.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "fixtures.hpp"
#include "points.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

// 4 sizes x 3 budgets x 3 G from the paper's law with 0.3 % noise. The final
// evaluation carries the law's loss; the train rows sit 0.2 nats higher, so a
// fit on the train window would be visibly off.
double write_grid(const fs::path& dir, double entropy = NAN, bool with_eval = true) {
  const Law truth = paper_law();
  std::mt19937_64 rng(21);
  std::normal_distribution<double> noise(0.0, 0.003);
  double F_max = 0;
  int k = 0;
  for (int64_t nb : {4, 6, 8, 11})
    for (double D : {2e9, 8e9, 3.2e10})
      for (int64_t G : {1, 4, 16}) {
        FixtureRun f;
        f.n_blocks = nb;
        f.d_model = 64 * nb;
        f.G = G;
        f.D = D;
        const double L = truth.loss(finemoe::law_N(64.0 * nb, nb, 64), D, G) * std::exp(noise(rng));
        f.final_loss = L + 0.2;
        if (with_eval) f.final_eval = L;
        f.entropy_rate = entropy;
        write_run(dir, "r" + std::to_string(k++), f);
        F_max = std::max(F_max, finemoe::law_flops_per_token(64.0 * nb, nb, 64, G) * D);
      }
  return F_max;
}

AnalyzeOptions quiet_options(const fs::path& out) {
  AnalyzeOptions o;
  o.out_dir = out.string();
  o.plots = false;
  o.quiet = true;
  o.boot.replicates = 8;
  o.boot.threads = 2;
  return o;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

// read_points_csv's DataError message for this CSV text ("" if it was read).
std::string csv_error(const fs::path& dir, const std::string& text) {
  write_text(dir / "bad.csv", text);
  try {
    read_points_csv((dir / "bad.csv").string());
    return "";
  } catch (const finemoe::DataError& e) {
    return e.what();
  }
}

}  // namespace

TEST(Points, WrittenCsvFitsToIdenticalCoefficients) {
  const fs::path dir = temp_dir("points_rt");
  write_grid(dir / "runs");
  const std::string csv = (dir / "points.csv").string();
  AnalyzeOptions o = quiet_options(dir / "out1");
  o.runs_dir = (dir / "runs").string();
  o.write_points = csv;
  o.holdout = "n-above:2e9";
  Analysis a = run_analysis(o);
  ASSERT_EQ(a.runs.runs.size(), 36u);
  for (const auto& r : a.runs.runs) {
    EXPECT_EQ(r.final_source, "eval") << r.name;  // not the train window, 0.2 nats higher
    EXPECT_TRUE(r.warning.empty()) << r.warning;
  }
  AnalyzeOptions p = quiet_options(dir / "out2");
  p.points = csv;
  p.holdout = "n-above:2e9";
  Analysis b = run_analysis(p);
  ASSERT_EQ(a.fits.size(), 1u);
  ASSERT_EQ(b.fits.size(), 1u);
  ASSERT_TRUE(a.fits[0].fit.ok && b.fits[0].fit.ok);
  EXPECT_EQ(law_values(a.fits[0].fit.law), law_values(b.fits[0].fit.law));  // bit for bit
  ASSERT_EQ(a.fits[0].boot.laws.size(), b.fits[0].boot.laws.size());
  for (size_t k = 0; k < a.fits[0].boot.intervals.size(); ++k) {
    EXPECT_EQ(a.fits[0].boot.intervals[k].lo, b.fits[0].boot.intervals[k].lo);
    EXPECT_EQ(a.fits[0].boot.intervals[k].hi, b.fits[0].boot.intervals[k].hi);
  }
  // Holdout by threshold: the 9 runs of the largest size (N = 2.8e9) are above 2e9.
  ASSERT_TRUE(a.fits[0].holdout.ok) << a.fits[0].holdout.message;
  EXPECT_EQ(a.fits[0].holdout.test_runs, 9);
  EXPECT_EQ(a.fits[0].holdout.train_runs, 27);
  EXPECT_EQ(a.fits[0].holdout.rmse, b.fits[0].holdout.rmse);
  EXPECT_LT(a.fits[0].holdout.mare, 0.01);
  // The recovered law is the true one, not the train window's (+0.2 nats).
  EXPECT_NEAR(a.fits[0].fit.law.alpha, paper_law().alpha, 0.03);
  EXPECT_LT(a.fits[0].fit.rmse, 0.02);
  // Through the command line as well.
  EXPECT_EQ(run_cli({"--points", csv, "--out", (dir / "out3").string(), "--no-plots", "-q", "--bootstrap", "0"}),
            finemoe::kExitOk);
  EXPECT_NE(slurp(dir / "out3" / "fit.json").find("\"points_file\": \"" + csv + "\""), std::string::npos);
  fs::remove_all(dir);
}

TEST(Points, ThresholdHoldouts) {
  const fs::path dir = temp_dir("points_holdout");
  const double F_max = write_grid(dir / "runs");
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.boot.replicates = 0;
  o.holdout = "d-above:1e10";  // the 12 runs at D = 3.2e10
  Analysis a = run_analysis(o);
  ASSERT_TRUE(a.fits[0].holdout.ok) << a.fits[0].holdout.message;
  EXPECT_EQ(a.fits[0].holdout.test_runs, 12);
  o.holdout = "f-above:" + std::to_string(F_max * 0.999);  // only the largest-F run
  a = run_analysis(o);
  ASSERT_TRUE(a.fits[0].holdout.ok) << a.fits[0].holdout.message;
  EXPECT_EQ(a.fits[0].holdout.test_runs, 1);
  o.holdout = "n-above:1e20";
  a = run_analysis(o);
  EXPECT_FALSE(a.fits[0].holdout.ok);
  EXPECT_NE(a.fits[0].holdout.message.find("no runs to test on"), std::string::npos);
  EXPECT_EQ(run_cli({o.runs_dir, "--holdout", "n-above:x", "--no-plots", "-q"}), finemoe::kExitUsage);
  fs::remove_all(dir);
}

TEST(Points, BadCsvFilesAreDataErrorsNamingTheProblem) {
  const fs::path dir = temp_dir("points_bad");
  EXPECT_NE(csv_error(dir, "N,D\n1e8,1e9\n").find("required column 'loss' missing"), std::string::npos);
  EXPECT_NE(csv_error(dir, "N,D,loss,D\n1e8,1e9,3,1\n").find("duplicate column name 'D'"), std::string::npos);
  EXPECT_NE(csv_error(dir, "N,D,loss\n1e8,1e9,nan\n").find("bad.csv:2: column 'loss' is nan"), std::string::npos);
  EXPECT_NE(csv_error(dir, "N,D,loss\n1e8,-1e9,3\n").find("column 'D' must be > 0, got -1e9"), std::string::npos);
  EXPECT_NE(csv_error(dir, "N,D,loss\n1e8,1e9,three\n").find("'three' is not a number"), std::string::npos);
  EXPECT_NE(csv_error(dir, "# only a comment\nN,D,loss\n").find("no data rows"), std::string::npos);
  EXPECT_NE(csv_error(dir, "N,D,loss\n1e8,1e9\n").find("2 fields, the header has 3"), std::string::npos);
  EXPECT_NE(csv_error(dir, "run,N,D,loss\nx,1e8,1e9,3\nx,2e8,2e9,2.9\n").find("run 'x' has rows with different N"),
            std::string::npos);
  EXPECT_EQ(csv_error(dir, "# ok\nloss,D,N,G,extra\n3,1e9,1e8,2,zz\n"), "");  // any order; unknown columns ignored
  write_text(dir / "bad.csv", "N,D,loss\n1e8,0,3\n");
  EXPECT_EQ(run_cli({"--points", (dir / "bad.csv").string(), "--out", (dir / "o").string(), "--no-plots", "-q"}),
            finemoe::kExitDataError);
  EXPECT_EQ(run_cli({"--points", (dir / "missing.csv").string(), "--no-plots", "-q"}), finemoe::kExitDataError);
  fs::remove_all(dir);
}

TEST(FinalLoss, FallsBackToTheTrainWindowWithAWarning) {
  const fs::path dir = temp_dir("final_fallback");
  FixtureRun f;
  f.final_loss = 3.0;
  write_run(dir, "old", f);
  f.final_eval = 2.5;
  write_run(dir, "new", f);
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = dir.string();
  RunSet s = collect_runs(dir.string(), o.collect);
  ASSERT_EQ(s.runs.size(), 2u);
  EXPECT_EQ(s.runs[0].name, "new");
  EXPECT_EQ(s.runs[0].final_source, "eval");
  EXPECT_EQ(s.runs[0].final_loss, 2.5);
  EXPECT_EQ(s.runs[0].final_stderr, 0.004);
  EXPECT_EQ(s.runs[1].final_source, "train");
  EXPECT_EQ(s.runs[1].final_loss, 3.0);
  EXPECT_NE(s.runs[1].warning.find("no final evaluation in metrics.h5"), std::string::npos) << s.runs[1].warning;
  o.collect.final_from_eval = false;  // --final-loss train
  s = collect_runs(dir.string(), o.collect);
  EXPECT_EQ(s.runs[0].final_loss, 3.0);
  EXPECT_TRUE(s.runs[0].warning.empty());
  fs::remove_all(dir);
}

TEST(FixC, EntropyFixesCAtTheDataFloor) {
  const fs::path dir = temp_dir("fixc_entropy");
  write_grid(dir / "runs", 0.5);
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.boot.replicates = 0;
  o.fix_c_entropy = true;
  Analysis a = run_analysis(o);
  ASSERT_TRUE(a.fits[0].fit.ok);
  EXPECT_TRUE(a.fits[0].options.fix_c);
  EXPECT_EQ(a.fits[0].fit.law.c, 0.5);
  EXPECT_NE(a.c_note.find("entropy rate 0.5000"), std::string::npos) << a.c_note;
  write_outputs(a);
  EXPECT_NE(slurp(dir / "out" / "report.md").find("c fixed at the data's entropy rate 0.5000"), std::string::npos);
  // Runs without the attribute: a usage error naming the option.
  write_grid(dir / "noent");
  EXPECT_EQ(run_cli({(dir / "noent").string(), "--fix-c", "entropy", "--no-plots", "-q", "--out",
                     (dir / "o2").string()}),
            finemoe::kExitUsage);
  fs::remove_all(dir);
}

TEST(Optimal, ExtrapolatedRowsAndDefaultBudgetsFollowTheRuns) {
  const fs::path dir = temp_dir("extrapolation");
  const double F_max = write_grid(dir / "runs");
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.boot.replicates = 0;
  Analysis a = run_analysis(o);
  ASSERT_TRUE(a.optimal.present);
  EXPECT_EQ(a.optimal.F_max, F_max);
  ASSERT_EQ(a.optimal.rows.size(), 8u);  // default: smallest run's F .. 10x the largest
  EXPECT_NEAR(a.optimal.rows.back().best.budget / (10 * F_max), 1.0, 1e-5);
  EXPECT_NEAR(a.optimal.rows.front().best.budget / a.optimal.F_min, 1.0, 1e-5);
  for (const auto& r : a.optimal.rows) EXPECT_EQ(r.extrapolated_why.find("F "), std::string::npos);
  // No dense runs: no multiplier, and the report says why.
  EXPECT_FALSE(a.optimal.has_dense);
  EXPECT_NE(a.optimal.dense_note.find("no dense runs of the same data"), std::string::npos);

  char budgets[64];
  std::snprintf(budgets, sizeof budgets, "%.9g,%.9g", 5 * F_max, 20 * F_max);
  o.optimal = budgets;
  o.dense_law = "paper";
  a = run_analysis(o);
  ASSERT_EQ(a.optimal.rows.size(), 2u);
  EXPECT_EQ(a.optimal.rows[0].extrapolated_why.find("F "), std::string::npos);
  EXPECT_TRUE(a.optimal.rows[1].extrapolated);
  EXPECT_EQ(a.optimal.rows[1].extrapolated_why.rfind("F 20x", 0), 0u) << a.optimal.rows[1].extrapolated_why;
  EXPECT_TRUE(a.optimal.has_dense);
  EXPECT_NE(a.optimal.dense_note.find("ANOTHER CORPUS"), std::string::npos);
  EXPECT_TRUE(std::isfinite(a.optimal.rows[0].multiplier_g1));
  write_outputs(a);
  const std::string csv = slurp(dir / "out" / "optimal.csv");
  EXPECT_NE(csv.find("compute_multiplier_g1,extrapolated,extrapolated_by"), std::string::npos);
  EXPECT_NE(csv.find(",1,F 20x"), std::string::npos) << csv;
  const std::string md = slurp(dir / "out" / "report.md");
  EXPECT_NE(md.find("*extrapolated* (F 20x"), std::string::npos);
  EXPECT_NE(md.find("ANOTHER CORPUS"), std::string::npos);

  // Dense runs of the same data: the default compares against their fit.
  int k = 0;
  for (int64_t nb : {4, 6, 8, 11})
    for (double D : {2e9, 8e9, 3.2e10}) {
      FixtureRun f;
      f.dense = true;
      f.n_blocks = nb;
      f.d_model = 64 * nb;
      f.D = D;
      f.final_eval = paper_dense_law().loss(finemoe::law_N(64.0 * nb, nb, 1), D);
      write_run(dir / "runs", "dense" + std::to_string(k++), f);
    }
  o.dense_law = "auto";
  a = run_analysis(o);
  EXPECT_TRUE(a.optimal.has_dense);
  EXPECT_EQ(a.optimal.dense_name, "fit");
  EXPECT_NE(a.optimal.dense_note.find("the same data"), std::string::npos);
  fs::remove_all(dir);
}

// A runs directory and a CSV of other runs fit together like one directory.
TEST(Points, MixWithARunsDirectory) {
  const fs::path dir = temp_dir("points_mix");
  write_grid(dir / "runs");
  const std::string csv = (dir / "all.csv").string(), part = (dir / "part.csv").string();
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.boot.replicates = 0;
  o.write_points = csv;
  const Analysis full = run_analysis(o);
  // Move the runs r20..r35 from the directory into a CSV of their own.
  std::ifstream in(csv);
  std::ofstream outp(part);
  std::string line;
  std::getline(in, line);
  outp << line << '\n';
  int moved = 0;
  while (std::getline(in, line)) {
    const int id = std::stoi(line.substr(1, line.find(',') - 1));
    if (id >= 20) {
      outp << line << '\n';
      fs::remove_all(dir / "runs" / ("r" + std::to_string(id)));
      ++moved;
    }
  }
  outp.close();
  ASSERT_EQ(moved, 16);
  o.write_points.clear();
  o.points = part;
  const Analysis mixed = run_analysis(o);
  ASSERT_EQ(mixed.runs.runs.size(), 36u);
  EXPECT_EQ(mixed.runs.runs.back().final_source, "points");
  ASSERT_TRUE(mixed.fits[0].fit.ok);
  const auto a = law_values(full.fits[0].fit.law), b = law_values(mixed.fits[0].fit.law);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(b[k], a[k], 1e-6 * std::fabs(a[k]) + 1e-9) << k;
  fs::remove_all(dir);
}

// The plot scripts (written even without gnuplot): a panel per model size,
// one loss-vs-N series per budget, dashed extrapolated rows.
TEST(Plots, PanelsPerSizeSeriesPerBudgetDashedExtrapolation) {
  const fs::path dir = temp_dir("plots");
  const double F_max = write_grid(dir / "runs");
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.boot.replicates = 0;
  o.plots = true;
  o.gnuplot = "/bin/true";  // scripts only: the test does not depend on gnuplot
  char budgets[64];
  std::snprintf(budgets, sizeof budgets, "%.9g,%.9g", 2 * F_max, 20 * F_max);
  o.optimal = budgets;
  Analysis a = run_analysis(o);
  write_outputs(a);
  const fs::path pl = dir / "out" / "plots";
  const std::string curves = slurp(pl / "loss_curves.gp");
  EXPECT_NE(curves.find("set multiplot layout 2,3"), std::string::npos);  // 4 sizes
  for (int64_t nb : {4, 6, 8, 11}) {
    char t[64];
    std::snprintf(t, sizeof t, "set title 'N = %.3g'", finemoe::law_N(64.0 * nb, nb, 64));
    EXPECT_NE(curves.find(t), std::string::npos) << t;
  }
  EXPECT_NE(curves.find("title 'G=16'"), std::string::npos);
  EXPECT_NE(curves.find("finals_0_0.dat"), std::string::npos);  // final evals overlaid
  EXPECT_NE(slurp(pl / "finals_0_0.dat").find(' '), std::string::npos);
  const std::string lvn = slurp(pl / "loss_vs_n.gp");
  EXPECT_NE(lvn.find("token budget (D bin)"), std::string::npos);  // the grid has 3 D values, 12 F values
  EXPECT_NE(lvn.find("D ≈ 3.2e+10, G=16"), std::string::npos);
  const std::string og = slurp(pl / "optimal_g.gp");
  EXPECT_NE(og.find("optimal_extrapolated.dat' using 1:2 with linespoints pt 6 lw 2 dt 2"), std::string::npos);
  EXPECT_NE(slurp(pl / "optimal_extrapolated.dat").find(' '), std::string::npos);
  fs::remove_all(dir);
}
