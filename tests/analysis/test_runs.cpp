// Run collection from metrics.h5 files and the degenerate directories:
// empty, one run, same N, NaN loss, unreadable file, a run still running.
#include <gtest/gtest.h>

#include "analyze.hpp"
#include "finemoe/error.hpp"
#include "fixtures.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

AnalyzeOptions quick(const fs::path& dir) {
  AnalyzeOptions o;
  o.runs_dir = dir.string();
  o.out_dir = (dir / "out").string();
  o.boot.replicates = 0;
  o.plots = false;
  o.quiet = true;
  return o;
}

// A small valid grid: 3 sizes × 2 D × 2 G from the paper's law.
void write_grid(const fs::path& dir) {
  const Law law = paper_law();
  int k = 0;
  for (int64_t nb : {4, 6, 8})
    for (double D : {1e9, 4e9})
      for (int64_t G : {1, 4}) {
        FixtureRun f;
        f.n_blocks = nb;
        f.d_model = 64 * nb;
        f.G = G;
        f.D = D;
        f.final_loss = law.loss(finemoe::law_N(64.0 * nb, nb, 64), D, G);
        write_run(dir, "run" + std::to_string(k++), f);
      }
}

}  // namespace

TEST(Runs, ReadsFinalLossAndCountsFromMetrics) {
  fs::path dir = temp_dir("read");
  FixtureRun f;
  f.d_model = 128;
  f.n_blocks = 2;
  f.E = 8;
  f.G = 4;
  f.D = 123456;
  f.final_loss = 2.75;
  f.rows = 50;
  write_run(dir, "a/b", f);
  RunSet s = collect_runs(dir.string(), CollectOptions{});
  ASSERT_EQ(s.runs.size(), 1u);
  const RunInfo& r = s.runs[0];
  EXPECT_EQ(r.name, "a/b");
  EXPECT_EQ(r.window, 5);                     // 10 % of 50 rows
  EXPECT_DOUBLE_EQ(r.final_loss, 2.75);       // last 20 % of rows are flat
  EXPECT_DOUBLE_EQ(r.D, 123456);
  EXPECT_DOUBLE_EQ(r.N, finemoe::law_N(128, 2, 8));
  EXPECT_DOUBLE_EQ(r.F, finemoe::law_flops_per_token(128, 2, 8, 4) * 123456);
  EXPECT_EQ(r.G, 4);
  EXPECT_EQ(r.points.size(), 1u);
  // A window reaching into the decreasing part raises the mean.
  CollectOptions wide;
  wide.final_window = 20;
  RunSet s2 = collect_runs(dir.string(), wide);
  EXPECT_GT(s2.runs[0].final_loss, 2.75);
  fs::remove_all(dir);
}

TEST(Runs, CooldownBranchContributesIntermediatePoints) {
  fs::path dir = temp_dir("cool");
  FixtureRun f;
  f.cooldown = true;
  f.rows = 40;
  write_run(dir, "c", f);
  CollectOptions o;
  o.cooldown_points = 4;
  RunSet s = collect_runs(dir.string(), o);
  ASSERT_EQ(s.runs.size(), 1u);
  ASSERT_EQ(s.runs[0].points.size(), 4u);
  EXPECT_DOUBLE_EQ(s.runs[0].points[0].D, 1e9 / 4);  // row 10 of 40
  EXPECT_DOUBLE_EQ(s.runs[0].points.back().D, 1e9);
  for (const auto& p : s.runs[0].points) EXPECT_EQ(p.group, 0);
  fs::remove_all(dir);
}

TEST(Runs, BadFilesAreSkippedWithReasons) {
  fs::path dir = temp_dir("bad");
  write_grid(dir);
  FixtureRun running;
  running.status = "running";
  write_run(dir, "zz_running", running);
  FixtureRun nan;
  nan.nan_at_end = true;
  write_run(dir, "zz_nan", nan);
  fs::create_directories(dir / "zz_garbage");
  std::ofstream(dir / "zz_garbage" / "metrics.h5") << "this is not an HDF5 file";
  AnalyzeOptions o = quick(dir);
  Analysis a = run_analysis(o);
  EXPECT_EQ(a.runs.runs.size(), 12u);
  ASSERT_EQ(a.runs.skipped.size(), 3u);
  std::map<std::string, std::string> why;
  for (const auto& s : a.runs.skipped) why[fs::path(s.path).parent_path().filename().string()] = s.reason;
  EXPECT_NE(why["zz_running"].find("'running'"), std::string::npos) << why["zz_running"];
  EXPECT_NE(why["zz_nan"].find("nan"), std::string::npos) << why["zz_nan"];
  EXPECT_FALSE(why["zz_garbage"].empty());
  std::printf("garbage: %s\nnan: %s\nrunning: %s\n", why["zz_garbage"].c_str(), why["zz_nan"].c_str(),
              why["zz_running"].c_str());
  ASSERT_FALSE(a.fits.empty());
  EXPECT_TRUE(a.fits[0].fit.ok) << a.fits[0].fit.message;
  EXPECT_EQ(run_cli({dir.string(), "--out", (dir / "out").string(), "--bootstrap", "0", "--no-plots", "-q"}),
            finemoe::kExitOk);
  fs::remove_all(dir);
}

TEST(Runs, EmptyDirectoryExitsWithDataError) {
  fs::path dir = temp_dir("empty");
  EXPECT_EQ(run_cli({dir.string(), "--out", (dir / "out").string(), "--no-plots"}), finemoe::kExitDataError);
  EXPECT_EQ(run_cli({(dir / "missing").string(), "--no-plots"}), finemoe::kExitDataError);
  fs::remove_all(dir);
}

TEST(Runs, OneRunCannotBeFitted) {
  fs::path dir = temp_dir("one");
  write_run(dir, "only", FixtureRun{});
  Analysis a = run_analysis(quick(dir));
  ASSERT_EQ(a.fits.size(), 1u);
  EXPECT_FALSE(a.fits[0].fit.ok);
  EXPECT_NE(a.fits[0].fit.message.find("need at least"), std::string::npos) << a.fits[0].fit.message;
  EXPECT_EQ(run_cli({dir.string(), "--out", (dir / "out").string(), "--no-plots"}), finemoe::kExitDataError);
  // ... but a table from a given law is still a result.
  EXPECT_EQ(run_cli({dir.string(), "--out", (dir / "out").string(), "--no-plots", "--law", "paper", "--optimal",
                     "1e20"}),
            finemoe::kExitOk);
  fs::remove_all(dir);
}

TEST(Runs, AllRunsSameNCannotBeFitted) {
  fs::path dir = temp_dir("samen");
  int k = 0;
  for (double D : {1e9, 2e9, 4e9, 8e9})
    for (int64_t G : {1, 2, 4}) {
      FixtureRun f;
      f.G = G;
      f.D = D;
      f.final_loss = 3.0 - 0.1 * k;
      write_run(dir, "r" + std::to_string(k++), f);
    }
  Analysis a = run_analysis(quick(dir));
  ASSERT_EQ(a.fits.size(), 1u);
  EXPECT_FALSE(a.fits[0].fit.ok);
  EXPECT_NE(a.fits[0].fit.message.find("same N"), std::string::npos) << a.fits[0].fit.message;
  EXPECT_EQ(run_cli({dir.string(), "--out", (dir / "out").string(), "--no-plots"}), finemoe::kExitDataError);
  fs::remove_all(dir);
}

TEST(Runs, BadOptionsAreUsageErrors) {
  EXPECT_EQ(run_cli({"--law", "paper"}), finemoe::kExitUsage);            // no budgets, no runs
  EXPECT_EQ(run_cli({"--law", "a=1,alpha=x", "--optimal", "1e20"}), finemoe::kExitUsage);
  EXPECT_EQ(run_cli({"/tmp", "--huber-delta", "-1"}), finemoe::kExitUsage);
  EXPECT_EQ(run_cli({"/tmp", "--no-such-option"}), finemoe::kExitUsage);
  EXPECT_EQ(run_cli({"--help"}), finemoe::kExitOk);
}
