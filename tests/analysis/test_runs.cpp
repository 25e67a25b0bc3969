// Run collection from metrics.h5 files and the degenerate directories:
// empty, one run, same N, NaN loss, unreadable file, a run still running,
// and damaged files (fuzzed, FIFO, directory) among good runs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <random>

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

namespace {

// `n` copies of a fixture metrics.h5 with 1..64 flipped bits each (fixed seed)
// in DIR/zz_fuzzNN/metrics.h5.
void write_fuzzed(const fs::path& dir, int n, uint32_t seed) {
  const fs::path src = dir / "zz_source";
  FixtureRun f;
  f.rows = 40;
  write_run(dir, "zz_source", f);
  std::ifstream in(src / "metrics.h5", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove_all(src);
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    std::string b = bytes;
    const int flips = 1 + int(rng() % 64);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] ^= char(1 << (rng() % 8));
    const fs::path d = dir / ("zz_fuzz" + std::to_string(100 + i));
    fs::create_directories(d);
    std::ofstream(d / "metrics.h5", std::ios::binary) << b;
  }
}

}  // namespace

// One bad file never takes the analysis down: 40 fuzzed copies of a run
// (some crash or hang the HDF5 library when read in-process), a FIFO and a
// directory named metrics.h5 sit among 12 good runs. Every file ends up as a
// run or a skip with its reason, the FIFO never blocks, the fit succeeds and
// the exit code is 0.
TEST(Runs, DamagedFilesAmongGoodRunsAreSkippedNotFatal) {
  fs::path dir = temp_dir("damaged");
  write_grid(dir);
  write_fuzzed(dir, 40, 19);
  fs::create_directories(dir / "zz_fifo");
  ASSERT_EQ(::mkfifo((dir / "zz_fifo" / "metrics.h5").c_str(), 0644), 0);
  fs::create_directories(dir / "zz_dir" / "metrics.h5");
  AnalyzeOptions o = quick(dir);
  o.collect.read_timeout_s = 5;
  const auto t0 = std::chrono::steady_clock::now();
  Analysis a = run_analysis(o);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
  EXPECT_EQ(a.runs.runs.size() + a.runs.skipped.size(), 12u + 40u + 2u);
  EXPECT_GE(a.runs.runs.size(), 12u);
  std::map<std::string, std::string> why;
  int crashed = 0;
  for (const auto& s : a.runs.skipped) {
    why[fs::path(s.path).parent_path().filename().string()] = s.reason;
    EXPECT_FALSE(s.reason.empty()) << s.path;
    crashed += s.reason.find("crashed the HDF5 library") != std::string::npos;
  }
  std::printf("%zu usable, %zu skipped, %d of them crashed the HDF5 library in the reader process\n",
              a.runs.runs.size(), a.runs.skipped.size(), crashed);
  EXPECT_NE(why["zz_fifo"].find("is a FIFO, not a regular file"), std::string::npos) << why["zz_fifo"];
  EXPECT_NE(why["zz_dir"].find("is a directory, not a regular file"), std::string::npos) << why["zz_dir"];
  ASSERT_FALSE(a.fits.empty());
  EXPECT_TRUE(a.fits[0].fit.ok) << a.fits[0].fit.message;
  ::testing::internal::CaptureStderr();
  const int code = run_cli({dir.string(), "--out", (dir / "out").string(), "--bootstrap", "0", "--no-plots", "-q"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, finemoe::kExitOk) << err;
  EXPECT_NE(err.find("files skipped"), std::string::npos) << err;  // -q still warns
  std::ifstream report(dir / "out" / "report.md");
  const std::string md((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  EXPECT_NE(md.find("zz_fifo/metrics.h5"), std::string::npos);
  fs::remove_all(dir);
}

// Nothing usable: exit 3, and the message names every file even under -q.
TEST(Runs, NoUsableFileIsExit3NamingTheFiles) {
  fs::path dir = temp_dir("unusable");
  fs::create_directories(dir / "a");
  ASSERT_EQ(::mkfifo((dir / "a" / "metrics.h5").c_str(), 0644), 0);
  fs::create_directories(dir / "b");
  std::ofstream(dir / "b" / "metrics.h5") << "not HDF5";
  ::testing::internal::CaptureStderr();
  const int code = run_cli({dir.string(), "--out", (dir / "out").string(), "--no-plots", "-q"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, finemoe::kExitDataError) << err;
  EXPECT_NE(err.find("none of the 2 metrics.h5 files is usable"), std::string::npos) << err;
  EXPECT_NE(err.find((dir / "a" / "metrics.h5").string()), std::string::npos) << err;
  EXPECT_NE(err.find((dir / "b" / "metrics.h5").string()), std::string::npos) << err;
  fs::remove_all(dir);
}
