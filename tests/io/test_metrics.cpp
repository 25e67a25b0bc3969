// metrics.h5: exact round trip of rows and attributes, resume truncation,
// half-written rows, kill -9 mid-append, and clear errors for bad files.
// Single process, no MPI (the writer is rank-0-only serial HDF5).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/metrics.hpp"
#include "io/h5util.hpp"
#include "io_test_util.hpp"

using namespace finemoe;
namespace hl = finemoe::h5layout;

namespace {

Config test_config() {
  Config c;
  c.model.d_model = 128;
  c.model.n_blocks = 3;
  c.moe.experts = 4;
  c.moe.granularity = 2;  // E·G = 8 experts per block
  c.train.seed = 987654321987ull;
  return c;
}

TrainRow train_row(int64_t step) {
  return TrainRow{step, step * 4096, 5.0 / (1.0 + 0.01 * double(step)), 1e-3 * std::sin(double(step)),
                  0.1 + double(step) * 1e-4, 12345.678 + double(step), 0.0123 * double(step),
                  0.0101 + 1e-6 * double(step)};
}
EvalRow eval_row(int64_t step) { return EvalRow{step, step * 4096, 4.0 / (1.0 + 0.02 * double(step))}; }

std::vector<RoutingStats> routing_row(int64_t step, int64_t blocks, int64_t experts) {
  std::vector<RoutingStats> out(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    auto& s = out[size_t(b)];
    for (int64_t e = 0; e < experts; ++e) s.tokens_per_expert.push_back(step * 1000 + b * 100 + e);
    s.unserved_fraction = 0.001 * double(step + b);
    s.router_entropy = std::log(double(experts)) - 0.01 * double(b) - 1e-5 * double(step);
    s.balance_loss = 1.0 + 0.03 * double(b) + 1e-4 * double(step);
    s.z_loss = 4.5 - 0.2 * double(b) + 1e-3 * double(step);
  }
  return out;
}

void write_run(const std::string& path, const Config& cfg, int64_t first, int64_t last, int64_t every,
               int64_t resume_step) {
  MetricsWriter w(path, cfg, count_model(cfg.shape()), 2.25, resume_step);
  for (int64_t s = first; s <= last; s += every) {
    w.append_train(train_row(s));
    w.append_routing(s, routing_row(s, cfg.model.n_blocks, cfg.n_experts()));
    if (s % 50 == 0) w.append_eval(eval_row(s));
  }
}

// Train rows must be exactly `steps`; routing rows `routing_steps` (default:
// the same). Rows of steps below `v1_rows_before` come from a format_version 1
// file: their aux columns must read NaN.
void expect_rows(const RunMetrics& m, const std::vector<int64_t>& steps, const Config& cfg,
                 const std::vector<int64_t>* routing_steps = nullptr, int64_t v1_rows_before = 0) {
  ASSERT_EQ(m.train.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    TrainRow e = train_row(steps[i]);
    const TrainRow& r = m.train[i];
    EXPECT_EQ(r.step, e.step);
    EXPECT_EQ(r.tokens, e.tokens);
    EXPECT_EQ(r.loss, e.loss);  // exact: float64 in, float64 out
    EXPECT_EQ(r.lr, e.lr);
    EXPECT_EQ(r.grad_norm, e.grad_norm);
    EXPECT_EQ(r.tokens_per_s, e.tokens_per_s);
    EXPECT_EQ(r.mfu, e.mfu);
    if (v1_rows_before > steps[i]) {
      EXPECT_TRUE(std::isnan(r.aux_loss)) << "a version-1 row has no aux_loss";
    } else {
      EXPECT_EQ(r.aux_loss, e.aux_loss);
    }
  }
  const std::vector<int64_t>& rsteps = routing_steps ? *routing_steps : steps;
  ASSERT_EQ(m.routing_step.size(), rsteps.size());
  ASSERT_EQ(m.routing_blocks, cfg.model.n_blocks);
  ASSERT_EQ(m.routing_experts, cfg.n_experts());
  const int64_t B = m.routing_blocks, X = m.routing_experts;
  for (size_t i = 0; i < rsteps.size(); ++i) {
    EXPECT_EQ(m.routing_step[i], rsteps[i]);
    auto rs = routing_row(rsteps[i], B, X);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t x = 0; x < X; ++x)
        EXPECT_EQ(m.routing_expert_load[size_t((int64_t(i) * B + b) * X + x)], rs[size_t(b)].tokens_per_expert[size_t(x)]);
      EXPECT_EQ(m.routing_dropped[size_t(int64_t(i) * B + b)], rs[size_t(b)].unserved_fraction);
      EXPECT_EQ(m.routing_entropy[size_t(int64_t(i) * B + b)], rs[size_t(b)].router_entropy);
      if (v1_rows_before > rsteps[i]) {
        EXPECT_TRUE(std::isnan(m.routing_balance[size_t(int64_t(i) * B + b)]));
        EXPECT_TRUE(std::isnan(m.routing_z[size_t(int64_t(i) * B + b)]));
      } else {
        EXPECT_EQ(m.routing_balance[size_t(int64_t(i) * B + b)], rs[size_t(b)].balance_loss);
        EXPECT_EQ(m.routing_z[size_t(int64_t(i) * B + b)], rs[size_t(b)].z_loss);
      }
    }
  }
}

std::vector<int64_t> range(int64_t a, int64_t b, int64_t every) {
  std::vector<int64_t> v;
  for (int64_t s = a; s <= b; s += every) v.push_back(s);
  return v;
}

// Runs a block, expecting DataError whose message has every needle; also checks
// that nothing (no HDF5 error stack) went to stderr.
template <typename F>
void expect_data_error(F&& f, const std::vector<std::string>& needles) {
  iotest::StderrCapture cap;
  std::string msg;
  try {
    f();
  } catch (const DataError& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("WRONG TYPE: ") + e.what();
  }
  std::string err = cap.finish();
  EXPECT_TRUE(err.empty()) << "stderr: " << err;
  ASSERT_FALSE(msg.empty()) << "no DataError thrown";
  EXPECT_EQ(msg.find("WRONG TYPE"), std::string::npos) << msg;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

}  // namespace

TEST(Metrics, RoundTripRowsAndAttributes) {
  const std::string dir = iotest::fresh_dir("metrics_rt"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  const ModelCounts counts = count_model(cfg.shape());
  {
    MetricsWriter w(path, cfg, counts, 2.25, -1);
    for (int64_t s = 10; s <= 100; s += 10) {
      w.append_train(train_row(s));
      w.append_routing(s, routing_row(s, cfg.model.n_blocks, cfg.n_experts()));
      if (s % 50 == 0) w.append_eval(eval_row(s));
    }
    w.set_attr("final_loss", 3.25);
    w.set_attr("note", std::string("hello"));
    w.set_status("completed");
    EXPECT_THROW(w.set_status("finished"), Error);
  }
  RunMetrics m = read_metrics(path);
  expect_rows(m, range(10, 100, 10), cfg);
  ASSERT_EQ(m.eval.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EvalRow e = eval_row(int64_t(50 * (i + 1)));
    EXPECT_EQ(m.eval[i].step, e.step);
    EXPECT_EQ(m.eval[i].tokens, e.tokens);
    EXPECT_EQ(m.eval[i].loss, e.loss);
  }
  EXPECT_EQ(m.str_attrs.at("status"), "completed");
  EXPECT_EQ(m.str_attrs.at("code_version"), std::string(FINEMOE_GIT));
  EXPECT_EQ(m.str_attrs.at("config"), cfg.to_ini());
  EXPECT_EQ(m.str_attrs.at("note"), "hello");
  for (const auto& [k, v] : cfg.to_pairs()) EXPECT_EQ(m.str_attrs.at("config." + k), v) << k;
  EXPECT_EQ(m.str_attrs.at("config.moe.granularity"), "2");
  EXPECT_EQ(m.num_attrs.at("format_version"), hl::kMetricsFormatVersion);
  EXPECT_EQ(m.num_attrs.at("N"), counts.N);
  EXPECT_EQ(m.num_attrs.at("N_active"), counts.N_active);
  EXPECT_EQ(m.num_attrs.at("flops_per_token"), counts.flops_per_token);
  EXPECT_EQ(m.num_attrs.at("model_flops_per_token"), counts.model_flops_per_token);
  EXPECT_EQ(m.num_attrs.at("E"), 4);
  EXPECT_EQ(m.num_attrs.at("G"), 2);
  EXPECT_EQ(m.num_attrs.at("d_model"), 128);
  EXPECT_EQ(m.num_attrs.at("n_blocks"), 3);
  EXPECT_EQ(m.num_attrs.at("dense"), 0);
  EXPECT_EQ(m.num_attrs.at("seed"), double(987654321987ull));
  EXPECT_EQ(m.num_attrs.at("data_entropy_rate"), 2.25);
  EXPECT_EQ(m.num_attrs.at("cooldown_branch"), 0);
  EXPECT_EQ(m.num_attrs.at("final_loss"), 3.25);
  // Any HDF5 tool reads it.
  EXPECT_EQ(std::system(("h5dump -H '" + path + "' > /dev/null 2>&1").c_str()), 0);
}

TEST(Metrics, FinalEvalRoundTripsAndResumeDropsIt) {
  const std::string dir = iotest::fresh_dir("metrics_final_eval"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  const ModelCounts counts = count_model(cfg.shape());
  {
    MetricsWriter w(path, cfg, counts, 2.25, -1);
    w.append_train(train_row(10));
    EXPECT_FALSE(read_metrics(path).has_final_eval);  // not written yet
    w.set_final_eval(FinalEval{10, 262144, 3.0123456789, 0.00321});
    w.set_status("completed");
  }
  RunMetrics m = read_metrics(path);
  ASSERT_TRUE(m.has_final_eval);
  EXPECT_EQ(m.final_eval.step, 10);
  EXPECT_EQ(m.final_eval.tokens, 262144);
  EXPECT_EQ(m.final_eval.loss, 3.0123456789);
  EXPECT_EQ(m.final_eval.stderr_loss, 0.00321);
  EXPECT_EQ(m.num_attrs.at(hl::kAttrFinalEvalLoss), 3.0123456789);
  // Resuming moves the weights on: the old final evaluation must not survive.
  { MetricsWriter w(path, cfg, counts, 2.25, 10); }
  EXPECT_FALSE(read_metrics(path).has_final_eval);
  EXPECT_EQ(read_metrics(path).num_attrs.count(hl::kAttrFinalEvalLoss), 0u);
}

TEST(Metrics, WrongRoutingShapeIsAnError) {
  const std::string dir = iotest::fresh_dir("metrics_shape"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  MetricsWriter w(path, cfg, count_model(cfg.shape()), 0.0, -1);
  EXPECT_THROW(w.append_routing(1, routing_row(1, 2, 8)), Error);   // 2 blocks, file has 3
  EXPECT_THROW(w.append_routing(1, routing_row(1, 3, 4)), Error);   // 4 experts, file has 8
}

TEST(Metrics, ResumeDropsRowsAfterTheCheckpointStep) {
  const std::string dir = iotest::fresh_dir("metrics_resume"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 100, 10, -1);  // the run got to step 100 ...
  write_run(path, cfg, 70, 120, 10, 60);  // ... and resumes from a checkpoint at 60
  RunMetrics m = read_metrics(path);
  expect_rows(m, range(10, 120, 10), cfg);  // equal to an uninterrupted run
  ASSERT_EQ(m.eval.size(), 2u);
  EXPECT_EQ(m.eval[0].step, 50);
  EXPECT_EQ(m.eval[1].step, 100);
  EXPECT_EQ(m.str_attrs.at("status"), "running");

  // resume_step 0 keeps nothing; resume on a missing file creates it.
  write_run(path, cfg, 10, 20, 10, 0);
  expect_rows(read_metrics(path), {10, 20}, cfg);
  const std::string other = dir + "/new.h5";
  write_run(other, cfg, 10, 30, 10, 500);
  expect_rows(read_metrics(other), {10, 20, 30}, cfg);
  // resume_step < 0 replaces the file.
  write_run(path, cfg, 40, 40, 10, -1);
  expect_rows(read_metrics(path), {40}, cfg);
}

TEST(Metrics, HalfWrittenRowIsIgnoredAndDroppedOnResume) {
  const std::string dir = iotest::fresh_dir("metrics_half"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 30, 10, -1);
  {  // a kill between datasets: /train/loss and /train/tokens got one row more
    h5::silence();
    h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_TRUE(f.valid());
    for (const char* name : {hl::kTrainLoss, hl::kTrainTokens}) {
      h5::Handle ds = h5::dataset(H5Dopen2(f, name, H5P_DEFAULT));
      hsize_t n = 4;
      ASSERT_GE(H5Dset_extent(ds, &n), 0);
    }
  }
  expect_rows(read_metrics(path), {10, 20, 30}, cfg);
  write_run(path, cfg, 40, 40, 10, 30);
  expect_rows(read_metrics(path), {10, 20, 30, 40}, cfg);
}

TEST(Metrics, UnreadableFileOnResumeIsMovedAside) {
  const std::string dir = iotest::fresh_dir("metrics_aside"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 30, 10, -1);
  std::string bytes = iotest::read_file(path);
  iotest::write_file(path, bytes.substr(0, bytes.size() / 3));  // truncated
  write_run(path, cfg, 40, 50, 10, 30);
  expect_rows(read_metrics(path), {40, 50}, cfg);
  EXPECT_EQ(iotest::read_file(path + ".corrupt"), bytes.substr(0, bytes.size() / 3));
}

// format_version 1 (before the auxiliary router losses): the same file
// without /train/aux_loss, /routing/balance_loss and /routing/z_loss. It reads
// (those columns NaN), and a resumed run continues it in a version-2 file
// whose earlier rows keep NaN there.
TEST(Metrics, FormatVersion1ReadsAndResumesIntoVersion2) {
  const std::string dir = iotest::fresh_dir("metrics_v1"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 50, 10, -1);
  {
    h5::silence();
    h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_TRUE(f.valid());
    for (const char* name : {hl::kTrainAuxLoss, hl::kRoutingBalanceLoss, hl::kRoutingZLoss})
      ASSERT_GE(H5Ldelete(f, name, H5P_DEFAULT), 0) << name;
    ASSERT_TRUE(h5::write_attr_i32(f, hl::kAttrFormatVersion, 1));
  }
  RunMetrics old = read_metrics(path);
  EXPECT_EQ(old.num_attrs.at("format_version"), 1);
  expect_rows(old, range(10, 50, 10), cfg, nullptr, /*v1_rows_before=*/1000);
  expect_rows(read_metrics_isolated(path), range(10, 50, 10), cfg, nullptr, 1000);
  // A version-2 file that lacks a version-2 dataset is damaged, not old.
  {
    const std::string broken = dir + "/broken.h5";
    write_run(broken, cfg, 10, 20, 10, -1);
    h5::Handle f = h5::file(H5Fopen(broken.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Ldelete(f, hl::kRoutingZLoss, H5P_DEFAULT), 0);
    f.close();
    expect_data_error([&] { read_metrics(broken); }, {broken, "dataset /routing/z_loss missing"});
  }
  // Resume at step 30: rows 10..30 carried over (aux NaN), 40.. new.
  write_run(path, cfg, 40, 60, 10, 30);
  RunMetrics m = read_metrics(path);
  EXPECT_EQ(m.num_attrs.at("format_version"), hl::kMetricsFormatVersion);
  expect_rows(m, range(10, 60, 10), cfg, nullptr, /*v1_rows_before=*/40);
}

TEST(Metrics, ReadErrorsNameTheFileAndProblem) {
  const std::string dir = iotest::fresh_dir("metrics_err");
  const Config cfg = test_config();
  expect_data_error([&] { read_metrics(dir + "/nope.h5"); }, {dir + "/nope.h5", "file not found"});
  iotest::write_file(dir + "/text.h5", "step,loss\n1,2\n");
  expect_data_error([&] { read_metrics(dir + "/text.h5"); }, {dir + "/text.h5", "not an HDF5 file"});

  const std::string good = dir + "/good.h5";
  write_run(good, cfg, 10, 30, 10, -1);
  std::string bytes = iotest::read_file(good);
  iotest::write_file(dir + "/trunc.h5", bytes.substr(0, bytes.size() / 2));
  expect_data_error([&] { read_metrics(dir + "/trunc.h5"); }, {dir + "/trunc.h5", "truncated or corrupt"});

  h5::silence();
  const std::string missing = dir + "/missing.h5", version = dir + "/version.h5";
  iotest::write_file(missing, bytes);
  iotest::write_file(version, bytes);
  {
    h5::Handle f = h5::file(H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Ldelete(f, hl::kTrainLr, H5P_DEFAULT), 0);
    h5::Handle g = h5::file(H5Fopen(version.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_TRUE(h5::write_attr_i32(g, hl::kAttrFormatVersion, 7));
  }
  expect_data_error([&] { read_metrics(missing); }, {missing, "dataset /train/lr missing"});
  expect_data_error([&] { read_metrics(version); }, {version, "format_version 7"});
  EXPECT_THROW(MetricsWriter(version, cfg, count_model(cfg.shape()), 0.0, 10), DataError);
  // the refused resume did not touch the file
  h5::Handle g = h5::file(H5Fopen(version.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  int64_t v = 0;
  ASSERT_TRUE(h5::read_attr_i64(g, hl::kAttrFormatVersion, v));
  EXPECT_EQ(v, 7);
}

TEST(Metrics, UnwritableDirectoryIsAnErrorNamingThePath) {
  const std::string dir = iotest::fresh_dir("metrics_unwritable");
  iotest::write_file(dir + "/afile", "x");
  const std::string path = dir + "/afile/metrics.h5";  // parent is a regular file
  const Config cfg = test_config();
  iotest::StderrCapture cap;
  std::string msg;
  try {
    MetricsWriter w(path, cfg, count_model(cfg.shape()), 0.0, -1);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_TRUE(cap.finish().empty());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

// A child appends rows as fast as it can and is killed with SIGKILL at a
// random moment; every row it completed before the kill must read back, and
// h5dump (and h5py where installed) must open the file.
TEST(Metrics, KillMinus9MidAppendLeavesAReadableFile) {
  const Config cfg = test_config();
  std::mt19937 rng(std::random_device{}());
  // h5py where some Python has it (the distro's when a pyenv python lacks it).
  std::string python;
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (python.empty() && std::system((std::string(py) + " -c 'import h5py' > /dev/null 2>&1").c_str()) == 0) python = py;
  const bool have_h5py = !python.empty();
  std::printf("h5py check: %s\n", have_h5py ? python.c_str() : "no h5py found, h5dump only");
  const int kTrials = 8;
  int64_t total_rows = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string dir = iotest::fresh_dir("metrics_kill" + std::to_string(trial)), path = dir + "/metrics.h5";
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      try {
        MetricsWriter w(path, cfg, count_model(cfg.shape()), 0.0, -1);
        for (int64_t s = 1;; ++s) {
          w.append_train(train_row(s));
          w.append_routing(s, routing_row(s, cfg.model.n_blocks, cfg.n_experts()));
          if (s % 50 == 0) w.append_eval(eval_row(s));
          if (s == 1 && ::write(ready[1], "r", 1) != 1) ::_exit(2);
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1) << "child failed before its first row";
    ::close(ready[0]);
    const int delay_us = std::uniform_int_distribution<int>(1000, 150000)(rng);
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child exited on its own";

    RunMetrics m;
    ASSERT_NO_THROW(m = read_metrics(path)) << "trial " << trial << " after " << delay_us << " us";
    // Train is appended before routing: the kill may fall between the two.
    const int64_t nt = int64_t(m.train.size()), nr = int64_t(m.routing_step.size());
    ASSERT_GE(nt, 1);
    ASSERT_TRUE(nr == nt || nr == nt - 1) << nt << " train rows, " << nr << " routing rows";
    const auto rsteps = range(1, nr, 1);
    expect_rows(m, range(1, nt, 1), cfg, &rsteps);
    total_rows += nt;
    EXPECT_EQ(std::system(("h5dump '" + path + "' > /dev/null 2>&1").c_str()), 0) << "h5dump failed, trial " << trial;
    if (have_h5py) {
      EXPECT_EQ(std::system((python + " -c \"import h5py,sys; f=h5py.File(sys.argv[1],'r'); "
                             "assert len(f['train/loss'][:]) >= 1\" '" + path + "'").c_str()), 0);
    }
    // A resumed writer continues the same file.
    write_run(path, cfg, nr + 1, nr + 2, 1, nr);
    expect_rows(read_metrics(path), range(1, nr + 2, 1), cfg);
    std::printf("[ kill %d ] after %6d us: %5zu complete rows read back\n", trial, delay_us, m.train.size());
  }
  EXPECT_GT(total_rows, kTrials);
}
