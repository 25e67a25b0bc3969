// metrics.h5 faults (issue 19): a damaged file costs a skip or a salvage,
// never a crash or a hang; permission problems and FIFOs leave the file
// untouched; a full disk stops the writer with an error naming the file.
// Single process, no MPI. Every fuzz uses a fixed seed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

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
  c.model.n_blocks = 2;
  c.moe.experts = 4;
  c.moe.granularity = 2;  // 8 experts per block
  return c;
}

std::vector<RoutingStats> routing_row(int64_t step, const Config& cfg) {
  std::vector<RoutingStats> out(size_t(cfg.model.n_blocks));
  for (size_t b = 0; b < out.size(); ++b) {
    for (int64_t e = 0; e < cfg.n_experts(); ++e) out[b].tokens_per_expert.push_back(step * 100 + e);
    out[b].unserved_fraction = 0.01 * double(b);
    out[b].router_entropy = 1.5;
  }
  return out;
}

// Rows at steps first, first+every, ... last; an eval row every 50 steps.
void write_run(const std::string& path, const Config& cfg, int64_t first, int64_t last, int64_t every,
               int64_t resume_step) {
  MetricsWriter w(path, cfg, count_model(cfg.shape()), 2.0, resume_step);
  for (int64_t s = first; s <= last; s += every) {
    w.append_train(TrainRow{s, s * 1000, 5.0 - 0.01 * double(s), 1e-3, 0.5, 1e4, 0.1});
    w.append_routing(s, routing_row(s, cfg));
    if (s % 50 == 0) w.append_eval(EvalRow{s, s * 1000, 4.0});
  }
}

std::vector<int64_t> steps_of(const RunMetrics& m) {
  std::vector<int64_t> v;
  for (const auto& r : m.train) v.push_back(r.step);
  return v;
}

std::vector<int64_t> range(int64_t a, int64_t b, int64_t every) {
  std::vector<int64_t> v;
  for (int64_t s = a; s <= b; s += every) v.push_back(s);
  return v;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// Flips `flips` random bits of `bytes` (rng advances).
std::string flip_bits(std::string bytes, int flips, std::mt19937& rng) {
  std::uniform_int_distribution<size_t> pos(0, bytes.size() - 1);
  std::uniform_int_distribution<int> bit(0, 7);
  for (int k = 0; k < flips; ++k) bytes[pos(rng)] ^= char(1 << bit(rng));
  return bytes;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// Permission denied is not corruption: Error (exit 1) naming the file and the
// OS reason, the file byte-identical, nothing moved aside. As root (CI) the
// writer runs in a child that drops to uid/gid 65534, since root ignores
// file modes.
TEST(MetricsFaults, PermissionDeniedIsExit1AndLeavesTheFileUntouched) {
  const std::string dir = "/tmp/finemoe_metrics_perm_" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "' && chmod 0777 '" + dir + "'").c_str()), 0);
  const std::string path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 100, 10, -1);
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
  const std::string before = iotest::read_file(path);

  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(99);
    int code = 0;
    std::string msg;
    try {
      MetricsWriter w(path, cfg, count_model(cfg.shape()), 2.0, 60);
    } catch (const Error& e) {
      msg = e.what();
      code = e.exit_code();
    }
    if (::write(pipefd[1], msg.data(), msg.size()) < 0) ::_exit(98);
    ::_exit(code);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "writer child died";
  ASSERT_NE(WEXITSTATUS(status), 99) << "cannot drop privileges";
  EXPECT_EQ(WEXITSTATUS(status), kExitFailure) << msg;
  EXPECT_TRUE(has(msg, path)) << msg;
  EXPECT_TRUE(has(msg, "Permission denied")) << msg;
  EXPECT_TRUE(has(msg, "untouched")) << msg;
  EXPECT_TRUE(iotest::read_file(path) == before) << "the file changed";
  EXPECT_FALSE(iotest::file_exists(path + ".corrupt"));
  EXPECT_EQ(steps_of(read_metrics(path)), range(10, 100, 10));
  std::system(("rm -rf '" + dir + "'").c_str());
}

// A FIFO named metrics.h5: every reader and the writer refuse it at once
// (HDF5 would block forever in open()), naming it; it stays a FIFO.
TEST(MetricsFaults, FifoIsRefusedWithoutBlocking) {
  const std::string dir = iotest::fresh_dir("metrics_fifo"), path = dir + "/metrics.h5";
  ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
  const Config cfg = test_config();
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < 3; ++k) {
    std::string msg;
    int code = -1;
    try {
      if (k == 0) read_metrics(path);
      if (k == 1) read_metrics_isolated(path, 5);
      if (k == 2) MetricsWriter(path, cfg, count_model(cfg.shape()), 0.0, 10);
    } catch (const Error& e) {
      msg = e.what();
      code = e.exit_code();
    }
    EXPECT_EQ(code, kExitDataError) << k << ": " << msg;
    EXPECT_TRUE(has(msg, path)) << msg;
    EXPECT_TRUE(has(msg, "is a FIFO, not a regular file")) << msg;
  }
  EXPECT_LT(seconds_since(t0), 2.0);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_FALSE(iotest::file_exists(path + ".corrupt"));
}

// A file whose attributes are damaged (the global heap holding the
// variable-length strings lost its signature) but whose rows read: on resume
// it is moved aside byte-identical, its rows up to the checkpoint are copied
// into the new file (logged with their count), and the run continues there.
TEST(MetricsFaults, CorruptFileRowsAreRecoveredAndTheFileMovedAside) {
  const std::string dir = iotest::fresh_dir("metrics_recover"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 10, 100, 10, -1);
  std::string bytes = iotest::read_file(path);
  size_t gcol = 0, n_gcol = 0;
  for (size_t at = bytes.find("GCOL"); at != std::string::npos; at = bytes.find("GCOL", at + 4)) gcol = at, ++n_gcol;
  ASSERT_GE(n_gcol, 1u) << "no global heap in the file?";
  for (size_t at = bytes.find("GCOL"); at != std::string::npos; at = bytes.find("GCOL", at + 4)) bytes[at] = 'X';
  iotest::write_file(path, bytes);
  // Strictly, the file is corrupt: the reader says so and names it.
  MetricsSalvage s = salvage_metrics(path);
  EXPECT_FALSE(s.clean());
  EXPECT_TRUE(has(s.problem, path)) << s.problem;
  EXPECT_TRUE(s.train_ok && s.eval_ok && s.routing_ok) << s.problem;

  iotest::StderrCapture cap;
  write_run(path, cfg, 70, 80, 10, 60);  // resume from a checkpoint at step 60
  const std::string log = cap.finish();
  EXPECT_TRUE(has(log, "corrupt file moved to " + path + ".corrupt")) << log;
  EXPECT_TRUE(has(log, "recovered 6 train, 1 eval and 6 routing rows up to step 60")) << log;
  EXPECT_TRUE(iotest::read_file(path + ".corrupt") == bytes) << "the moved-aside file differs";
  const RunMetrics m = read_metrics(path);
  EXPECT_EQ(steps_of(m), range(10, 80, 10));
  EXPECT_EQ(m.routing_step, range(10, 80, 10));
  ASSERT_EQ(m.eval.size(), 1u);
  EXPECT_EQ(m.eval[0].step, 50);
  EXPECT_EQ(m.train[2].loss, 5.0 - 0.01 * 30);  // values, not just steps
  EXPECT_EQ(m.routing_expert_load[size_t(2 * cfg.model.n_blocks * cfg.n_experts() + 3)], 30 * 100 + 3);
  EXPECT_EQ(m.str_attrs.at("status"), "running");
  EXPECT_FALSE(iotest::file_exists(path + ".recovering"));

  // A second corrupt file is kept too: .corrupt-2.
  std::string again = iotest::read_file(path);
  iotest::write_file(path, again.substr(0, again.size() / 4));
  iotest::StderrCapture cap2;
  write_run(path, cfg, 90, 90, 10, 80);
  cap2.finish();
  EXPECT_TRUE(iotest::read_file(path + ".corrupt") == bytes) << "the moved-aside file differs";
  EXPECT_TRUE(iotest::read_file(path + ".corrupt-2") == again.substr(0, again.size() / 4));
  const auto steps = steps_of(read_metrics(path));
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back(), 90);
}

// Fuzz: a few hundred copies of a real metrics.h5 with 1..64 flipped bits
// (fixed seed). The isolated reader returns or reports every one (DataError,
// never another exception), each within its timeout, and this process
// survives the ones that crash the HDF5 library or send it into a loop
// (with libhdf5 1.10.8 about 20-30 of the 300 crash it and 1-2 loop; the
// counts vary between runs, since what a damaged file does to the library
// depends on memory layout, so the test does not depend on them).
TEST(MetricsFaults, FuzzedFilesNeverCrashOrHangTheIsolatedReader) {
  const std::string dir = iotest::fresh_dir("metrics_fuzz"), good = dir + "/good.h5", path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(good, cfg, 1, 40, 1, -1);
  const std::string bytes = iotest::read_file(good);
  std::mt19937 rng(20261203);
  std::map<std::string, int> outcome;
  double slowest = 0;
  const int kFiles = 300;
  const double kTimeout = 3;  // a healthy read of this file takes milliseconds
  for (int i = 0; i < kFiles; ++i) {
    iotest::write_file(path, flip_bits(bytes, 1 + int(rng() % 64), rng));
    const auto t0 = std::chrono::steady_clock::now();
    try {
      RunMetrics m = read_metrics_isolated(path, kTimeout);
      outcome["read"]++;
      EXPECT_LE(m.train.size(), 40u);
    } catch (const DataError& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(has(msg, path)) << msg;
      outcome[has(msg, "crashed the HDF5 library") ? "crashed (isolated)"
              : has(msg, "did not finish")         ? "timed out"
                                                   : "refused"]++;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "file " << i << ": not a DataError: " << e.what();
    }
    slowest = std::max(slowest, seconds_since(t0));
  }
  for (const auto& [k, n] : outcome) std::printf("[ fuzz ] %-20s %d\n", k.c_str(), n);
  std::printf("[ fuzz ] slowest read %.3f s\n", slowest);
  EXPECT_EQ(outcome["read"] + outcome["refused"] + outcome["crashed (isolated)"] + outcome["timed out"], kFiles);
  EXPECT_GT(outcome["read"], 0);     // the fuzz leaves some files readable ...
  EXPECT_GT(outcome["refused"], 0);  // ... and breaks others
  EXPECT_LT(slowest, kTimeout + 2.0);  // a hang is cut off at the timeout
}

// The trainer's resume on the same fuzzed files: the writer either continues
// (a clean file, or a corrupt one salvaged: the new file reads and holds
// only steps <= the checkpoint plus the new rows) or refuses with DataError
// (another format_version or shape: the file then untouched). Never a crash:
// the old file is only ever opened in this process after a clean isolated read.
TEST(MetricsFaults, ResumeOntoFuzzedFilesSalvagesOrRefuses) {
  const std::string dir = iotest::fresh_dir("metrics_fuzz_resume"), path = dir + "/metrics.h5";
  const Config cfg = test_config();
  write_run(path, cfg, 1, 40, 1, -1);
  const std::string bytes = iotest::read_file(path);
  std::mt19937 rng(7);
  int salvaged = 0, refused = 0, rebuilt = 0;
  for (int i = 0; i < 40; ++i) {
    ::unlink(path.c_str());
    ::unlink((path + ".corrupt").c_str());
    const std::string fuzzed = flip_bits(bytes, 1 + int(rng() % 64), rng);
    iotest::write_file(path, fuzzed);
    iotest::StderrCapture cap;
    std::string msg;
    try {
      write_run(path, cfg, 31, 32, 1, 30);
    } catch (const DataError& e) {
      msg = e.what();
    } catch (const Error& e) {
      msg = std::string("NOT A DataError: ") + e.what();
    }
    const std::string log = cap.finish();
    if (!msg.empty()) {
      EXPECT_FALSE(has(msg, "NOT A DataError")) << "file " << i << ": " << msg;
      EXPECT_TRUE(has(msg, path)) << msg;
      EXPECT_TRUE(iotest::read_file(path) == fuzzed) << "refused, yet changed: file " << i;
      ++refused;
      continue;
    }
    RunMetrics m;
    ASSERT_NO_THROW(m = read_metrics(path)) << "file " << i << ": " << log;
    const auto steps = steps_of(m);
    ASSERT_GE(steps.size(), 2u);
    EXPECT_EQ(steps[steps.size() - 2], 31);
    EXPECT_EQ(steps.back(), 32);
    for (size_t k = 0; k + 2 < steps.size(); ++k) EXPECT_LE(steps[k], 30);
    if (iotest::file_exists(path + ".corrupt")) {
      EXPECT_TRUE(has(log, "recovered")) << log;
      // Kept byte for byte: resume never writes the old file.
      EXPECT_TRUE(iotest::read_file(path + ".corrupt") == fuzzed) << log;
      ++salvaged;
    } else {
      ++rebuilt;
    }
  }
  std::printf("[ fuzz resume ] salvaged %d, refused %d, rebuilt from a clean read %d\n", salvaged, refused, rebuilt);
  EXPECT_GT(salvaged, 0);
}

// A full disk while appending (a 300 KiB tmpfs, the trainer's row shapes):
// the append that cannot reach the disk throws Error naming the file; every
// row appended before it reads back exactly (no zero-filled rows), and the
// process survives the close of the broken file. Needs permission to mount a
// tmpfs (root in a VM/CI container); skipped otherwise.
TEST(MetricsFaults, DiskFullStopsTheWriterAndKeepsEveryEarlierRow) {
  const std::string dir = iotest::fresh_dir("metrics_full");
  const std::string mount = "mount -t tmpfs -o size=300k finemoe_metrics_test '" + dir + "' > /dev/null 2>&1";
  if (std::system(mount.c_str()) != 0) GTEST_SKIP() << "cannot mount a tmpfs here (not root?)";
  struct Unmount {  // also when an ASSERT ends the test early
    std::string d;
    ~Unmount() { std::system(("umount '" + d + "' > /dev/null 2>&1").c_str()); }
  } unmount{dir};
  const std::string path = dir + "/metrics.h5";
  Config cfg;
  cfg.model.d_model = 64;
  cfg.model.n_blocks = 1;
  cfg.moe.experts = 8;
  cfg.moe.granularity = 1;
  std::string msg;
  int64_t appended = 0;
  {
    MetricsWriter w(path, cfg, count_model(cfg.shape()), 2.0, -1);
    try {
      for (int64_t s = 1; s <= 20000; ++s) {
        w.append_train(TrainRow{s, s * 1000, 5.0 - 1e-4 * double(s), 1e-3, 0.5, 1e4, 0.1});
        w.append_routing(s, routing_row(s, cfg));
        if (s % 50 == 0) w.append_eval(EvalRow{s, s * 1000, 4.0});
        appended = s;
      }
    } catch (const Error& e) {
      msg = e.what();
    }
    iotest::StderrCapture cap;  // the destructor warns about the broken close
  }
  std::printf("[ disk full ] %lld rows appended before: %s\n", (long long)appended, msg.c_str());
  EXPECT_TRUE(has(msg, path)) << msg;
  EXPECT_TRUE(has(msg, "cannot append to")) << msg;
  EXPECT_TRUE(has(msg, "(HDF5: file write failed: No space left on device)")) << msg;
  ASSERT_GT(appended, 10);
  RunMetrics m;
  try {
    m = read_metrics(path);
  } catch (const DataError& e) {
    // The failed flush may have left the file unreadable in-process; what a
    // resume would salvage is what counts then.
    MetricsSalvage s = salvage_metrics(path);
    std::printf("[ disk full ] strict read failed (%s); salvage: %s\n", e.what(), s.problem.c_str());
    m = s.metrics;
  }
  std::printf("[ disk full ] %zu train, %zu routing rows read back\n", m.train.size(), m.routing_step.size());
  int64_t zero_rows = 0, wrong = 0;
  for (size_t i = 0; i < m.routing_step.size(); ++i) {
    const int64_t s = m.routing_step[i];
    int64_t sum = 0;
    for (int64_t x = 0; x < cfg.n_experts(); ++x) {
      const int64_t v = m.routing_expert_load[i * size_t(cfg.n_experts()) + size_t(x)];
      sum += v;
      wrong += v != s * 100 + x;
    }
    zero_rows += sum == 0;
  }
  EXPECT_EQ(zero_rows, 0);
  EXPECT_EQ(wrong, 0);
  for (size_t i = 0; i < m.train.size(); ++i) EXPECT_EQ(m.train[i].step, int64_t(i) + 1);
  EXPECT_LE(int64_t(m.train.size()), appended + 1);
}
