// Start-up faults of moe-train (issue 19): ranks agree before they work,
// stop signals are honoured from the first instruction, input limits.
//
// Every mismatch runs as an MPMD launch (one rank with arguments A, one with
// B) under `timeout`: before the agreement step these hung (a config file
// missing on one rank), aborted in an MPI receive (different d_model) or
// silently trained inconsistent replicas (different seed or lr). Each case
// asserts the exit code, that it came within seconds, that the message is
// printed exactly once, and that the run directory was not touched.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e_util.hpp"
#include "finemoe/metrics.hpp"

using namespace e2e;
namespace fs = std::filesystem;

namespace {

// 2 steps of the tiny model: a clean run takes about a second.
std::string small(const std::string& dir) { return tiny_args(dir, 2); }

std::string mpmd(const std::string& a, const std::string& b) {
  return std::string("timeout 60 ") + MPIEXEC + " -n 1 " + MOE_TRAIN + " " + a + " : -n 1 " + MOE_TRAIN + " " + b;
}

struct Timed {
  Result r;
  double seconds = 0;
};
Timed run_timed(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  Timed t;
  t.r = run(cmd);
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A run directory holding a file whose bytes must survive a refused start.
std::string sentinel_dir(const std::string& tag) {
  const std::string dir = temp_dir(tag);
  std::ofstream(dir + "/config.ini") << "# sentinel: a refused start must not rewrite this\n";
  return dir;
}
void expect_untouched(const std::string& dir) {
  EXPECT_EQ(read_file(dir + "/config.ini"), "# sentinel: a refused start must not rewrite this\n") << dir;
  EXPECT_FALSE(fs::exists(dir + "/metrics.h5")) << dir;
  EXPECT_FALSE(fs::exists(dir + "/checkpoints")) << dir;
}

// Signal mask field ("SigCgt:") of /proc/PID/status: the signals with a handler.
bool catches(pid_t pid, int sig) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("SigCgt:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1;
  return false;
}
// Processes whose parent is `pid`.
std::vector<pid_t> children(pid_t pid) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(f)), {});
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream is(stat.substr(close + 2));
    char state;
    long ppid = 0;
    is >> state >> ppid;
    if (ppid == pid) out.push_back(pid_t(std::stol(name)));
  }
  return out;
}

pid_t spawn(const std::string& cmd, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    const std::string full = "exec " + cmd + " > " + log + " 2>&1";
    execl("/bin/sh", "sh", "-c", full.c_str(), (char*)nullptr);
    _exit(127);
  }
  return pid;
}
int wait_code(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

// ---------------------------------------------------------------- Agreement --
TEST(Startup, MismatchedRanksExit2OnceWithinSeconds) {
  struct Case {
    std::string name, extra_a, extra_b, expect;  // expect: text printed exactly once
  } cases[] = {
      {"train.steps", "", "--train.steps 3", "train.steps: '2' on rank 0 | '3' on rank 1"},
      {"model.d_model", "", "--model.d_model 128", "model.d_model: '64' on rank 0 | '128' on rank 1"},
      {"train.seed", "", "--train.seed 7", "train.seed: '1234' on rank 0 | '7' on rank 1"},
      {"train.lr", "--train.lr 1e-3", "", "train.lr: '0.001' on rank 0 | '0.0030000000000000001' on rank 1"},
      {"command", "", "--print-config", "command: 'train' on rank 0 | '--print-config' on rank 1"},
  };
  for (const auto& c : cases) {
    const std::string dir = sentinel_dir("agree");
    Timed t = run_timed(mpmd(small(dir) + " " + c.extra_a, small(dir) + " " + c.extra_b));
    EXPECT_EQ(t.r.code, 2) << c.name << "\n" << t.r.out;
    EXPECT_LT(t.seconds, 30) << c.name;
    EXPECT_EQ(count_occurrences(t.r.out, "ranks disagree on the resolved config"), 1) << c.name << "\n" << t.r.out;
    EXPECT_EQ(count_occurrences(t.r.out, c.expect), 1) << c.name << "\n" << t.r.out;
    EXPECT_EQ(t.r.out.find("step      1/"), std::string::npos) << c.name << ": trained\n" << t.r.out;
    expect_untouched(dir);
  }
  // A different run.dir (one of them unwritable): refused before either is created.
  const std::string dir = sentinel_dir("agree_dir");
  Timed t = run_timed(mpmd(small(dir), small("/proc/finemoe_nope")));
  EXPECT_EQ(t.r.code, 2) << t.r.out;
  EXPECT_LT(t.seconds, 30);
  EXPECT_EQ(count_occurrences(t.r.out, "run.dir: '" + dir + "' on rank 0 | '/proc/finemoe_nope' on rank 1"), 1)
      << t.r.out;
  expect_untouched(dir);
}

// A parse error on one rank only (the config file missing on its node): that
// rank's message, printed once by rank 0, whichever rank failed.
TEST(Startup, ConfigErrorOnOneRankExit2OnceWithinSeconds) {
  for (int bad : {0, 1}) {
    const std::string dir = sentinel_dir("onerank");
    const std::string good = small(dir), broken = small(dir) + " --config /nonexistent/finemoe.ini";
    Timed t = run_timed(bad == 0 ? mpmd(broken, good) : mpmd(good, broken));
    EXPECT_EQ(t.r.code, 2) << t.r.out;
    EXPECT_LT(t.seconds, 30);
    EXPECT_EQ(count_occurrences(t.r.out, "/nonexistent/finemoe.ini"), 1) << t.r.out;
    EXPECT_EQ(count_occurrences(t.r.out, "on rank " + std::to_string(bad) + " of 2: --config: cannot open"), 1)
        << t.r.out;
    expect_untouched(dir);
  }
  // A bad value on one rank: its validation message, once.
  const std::string dir = sentinel_dir("onerank_val");
  Timed t = run_timed(mpmd(small(dir), small(dir) + " --moe.granularity 3"));
  EXPECT_EQ(t.r.code, 2) << t.r.out;
  EXPECT_EQ(count_occurrences(t.r.out, "on rank 1 of 2: config key 'moe.granularity'"), 1) << t.r.out;
  expect_untouched(dir);
}

// ---------------------------------------------------------------- Limits -----
TEST(Startup, InputLimitsExit2NamingTheInput) {
  const std::string tmp = temp_dir("limits");
  const std::string dup = tmp + "/dup.ini";
  std::ofstream(dup) << "[model]\nd_model = 64\n[train]\nsteps = 2\n[model]\nd_model = 128\n";
  struct Case {
    std::string args;
    std::vector<std::string> expect;
  } cases[] = {
      {"--config " + tmp, {"--config: '" + tmp + "' is a directory"}},
      {"--config " + dup, {dup + ":6: duplicate config key 'model.d_model' (first set at line 2)"}},
      {"--moe.routing token_choice --moe.capacity_factor 1e18", {"config key 'moe.capacity_factor': must be in (0, E*G = 4]"}},
      {"--model.n_blocks 100000000", {"config key 'model.n_blocks': must be in [1, 1024], got 100000000"}},
      // ~70 TiB of parameters: refused before allocating, naming the keys.
      {"--model.d_model 16384 --model.n_blocks 256",
       {"'model.d_model' = 16384", "'model.n_blocks' = 256", "is available", "make the model or the batch smaller"}},
  };
  for (int ranks : {1, 2}) {
    for (const auto& c : cases) {
      const std::string dir = sentinel_dir("limit");
      Timed t = run_timed("timeout 60 " + train_cmd(ranks, small(dir) + " " + c.args));
      EXPECT_EQ(t.r.code, 2) << ranks << " " << c.args << "\n" << t.r.out;
      EXPECT_LT(t.seconds, 30) << c.args;
      for (const auto& e : c.expect) EXPECT_EQ(count_occurrences(t.r.out, e), 1) << c.args << "\n" << t.r.out;
      EXPECT_EQ(t.r.out.find("bad_alloc"), std::string::npos) << t.r.out;
      expect_untouched(dir);
    }
  }
  EXPECT_EQ(read_file(dup), "[model]\nd_model = 64\n[train]\nsteps = 2\n[model]\nd_model = 128\n");
}

TEST(Startup, HelpAndPrintConfigStillWork) {
  Result h = run(train_cmd(2, "--help"));
  EXPECT_EQ(h.code, 0) << h.out;
  EXPECT_EQ(count_occurrences(h.out, "Usage: [mpirun -n P | srun] moe-train"), 1) << h.out;
  Result p = run(train_cmd(2, "--model.d_model 256 --print-config"));
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_EQ(count_occurrences(p.out, "d_model = 256"), 1) << p.out;
}

// The divergence message and the progress lines count steps the same way:
// the step that diverged is the one after the last logged step.
TEST(Startup, DivergenceNamesTheLogsStepNumber) {
  const std::string dir = temp_dir("nanstep");
  Result r = run(train_cmd(1, tiny_args(dir, 30) + " --train.lr 1e30 --train.lr_min 1e29 --train.grad_clip 0"));
  ASSERT_EQ(r.code, 4) << r.out;
  const auto steps = train_steps(dir);  // log_every 1: one row per finished step
  ASSERT_FALSE(steps.empty()) << r.out;
  const long long last = steps.back();
  char logged[64];
  std::snprintf(logged, sizeof logged, "step %6lld/30", last);
  EXPECT_NE(r.out.find(logged), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("diverged at step " + std::to_string(last + 1) + ":"), std::string::npos) << r.out;
}

// ---------------------------------------------------------------- Signals ----
// SIGUSR1 as soon as the process can take it (its handler is in /proc's
// SigCgt: installed before MPI_Init): exit 75, nothing written. Before, a
// signal in the first ~0.8 s killed the process (exit 138, not requeued).
TEST(Startup, StopSignalRightAfterLaunchExits75WithNothingWritten) {
  const std::string dir = temp_dir("sig0") + "/run", log = dir + ".log";
  pid_t pid = spawn(train_cmd(1, tiny_args(dir, 50)), log);
  bool ready = false;
  for (int i = 0; i < 20000 && !ready; ++i) {
    ready = catches(pid, SIGUSR1);
    if (!ready) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_TRUE(ready) << read_file(log);
  kill(pid, SIGUSR1);
  EXPECT_EQ(wait_code(pid), 75) << read_file(log);
  const std::string out = read_file(log);
  EXPECT_EQ(count_occurrences(out, "stop signal received during start-up"), 1) << out;
  EXPECT_EQ(out.find("step      1/"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir)) << "a stop before the first step writes nothing";
}

// The same on 2 ranks under mpirun (which forwards SIGUSR1 to every rank).
TEST(Startup, StopSignalRightAfterLaunchTwoRanksExits75) {
  const std::string dir = temp_dir("sig2") + "/run", log = dir + ".log";
  pid_t pid = spawn(train_cmd(2, tiny_args(dir, 50)), log);
  bool ready = false;
  for (int i = 0; i < 20000 && !ready; ++i) {
    std::vector<pid_t> ranks = children(pid);
    int n = 0;
    for (pid_t r : ranks) n += catches(r, SIGUSR1) ? 1 : 0;
    ready = n == 2;
    if (!ready) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ASSERT_TRUE(ready) << read_file(log);
  kill(pid, SIGUSR1);
  EXPECT_EQ(wait_code(pid), 75) << read_file(log);
  const std::string out = read_file(log);
  EXPECT_EQ(count_occurrences(out, "stop signal received during start-up"), 1) << out;
  EXPECT_FALSE(fs::exists(dir + "/checkpoints/LATEST")) << out;
}

// A larger model (140 MiB of params, grads and AdamW moments; its
// allocation, initialisation and the data set-up take a second or more): the
// signal is sent once the process has visibly allocated the model (resident
// memory above 128 MiB; about 50 MiB before), i.e. inside train()'s set-up,
// after the agreement step and long before the first step.
TEST(Startup, StopSignalDuringLongStartupExits75WithoutCheckpoint) {
  const std::string dir = temp_dir("siglong") + "/run", log = dir + ".log";
  const std::string args = "--model.d_model 256 --model.n_blocks 2 --model.seq_len 64 --moe.experts 8 "
                           "--train.batch_size 4 --moe.group_size 64 --train.precision auto --train.threads 1 "
                           "--train.steps 5 --run.dir " + dir;
  pid_t pid = spawn(train_cmd(1, args), log);
  auto rss_kib = [&] {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return 0L;
  };
  bool big = false;
  for (int i = 0; i < 60000 && !big; ++i) {
    big = rss_kib() > 128 * 1024;
    if (!big) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ASSERT_TRUE(big) << read_file(log);
  kill(pid, SIGTERM);
  EXPECT_EQ(wait_code(pid), 75) << read_file(log);
  const std::string out = read_file(log);
  // train()'s own check (main's says "rerun the same command to start").
  EXPECT_EQ(count_occurrences(out, "stop signal received during start-up: exiting with code 75 before the first "
                                   "step, nothing written\n"), 1) << out;
  EXPECT_EQ(out.find("step      1/"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir)) << "a stop before the first step writes nothing";
}

// A resumed run stopped during start-up, after its metrics file is open:
// exit 75, status `preempted`, and nothing else changed (no new checkpoint,
// LATEST and the checkpoint's bytes as they were, the same metrics rows).
// The signal is sent while the process has the checkpoint open (its
// /proc/PID/fd), i.e. during load_checkpoint, before the first step.
TEST(Startup, StopSignalWhileResumingExits75StatusPreempted) {
  const std::string dir = temp_dir("sigresume") + "/run", log = dir + ".log";
  const std::string args = "--model.d_model 256 --model.n_blocks 2 --model.seq_len 64 --moe.experts 8 "
                           "--train.batch_size 4 --moe.group_size 64 --train.threads 1 --train.eval_tokens 256 "
                           "--train.final_eval_tokens 2048 --run.dir " + dir;  // not the default 2M: minutes under load
  Result first = run(train_cmd(1, args + " --train.steps 1"));
  ASSERT_EQ(first.code, 0) << first.out;
  const std::string latest = read_file(dir + "/checkpoints/LATEST");
  ASSERT_FALSE(latest.empty());
  std::string name = latest.substr(0, latest.find_first_of("\r\n"));
  const std::string ckpt = dir + "/checkpoints/" + name, ckpt_bytes = read_file(ckpt);
  const auto rows = train_steps(dir);

  pid_t pid = spawn(train_cmd(1, args + " --train.steps 3"), log);
  auto has_open = [&] {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
      if (fs::read_symlink(e.path(), ec).filename() == name) return true;
    return false;
  };
  bool loading = false;
  for (int i = 0; i < 60000 && !loading; ++i) {
    loading = has_open();
    if (!loading) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_TRUE(loading) << read_file(log);
  kill(pid, SIGUSR1);
  EXPECT_EQ(wait_code(pid), 75) << read_file(log);
  const std::string out = read_file(log);
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  EXPECT_EQ(count_occurrences(out, "stop signal received during start-up: exiting with code 75 before the first "
                                   "step, no checkpoint needed"), 1) << out;
  EXPECT_EQ(out.find("step      2/"), std::string::npos) << out;
  EXPECT_EQ(run_status(dir), "preempted");
  EXPECT_EQ(read_file(dir + "/checkpoints/LATEST"), latest);
  EXPECT_EQ(read_file(ckpt), ckpt_bytes) << "checkpoint rewritten";
  EXPECT_EQ(train_steps(dir), rows);
  std::vector<std::string> ckpts;
  for (const auto& e : fs::directory_iterator(dir + "/checkpoints")) ckpts.push_back(e.path().filename().string());
  EXPECT_EQ(ckpts.size(), 2u) << "only the checkpoint and LATEST";
}

// ---------------------------------------------------------------- Launcher ---
// mpirun killed with -9: its ranks exit by themselves (status 1, from their
// launcher watch) instead of training on, and writing checkpoints, until the
// MPI runtime notices. This process becomes the ranks' subreaper so that it
// inherits them when mpirun dies and can read how they ended.
TEST(Startup, RanksExitWhenTheirLauncherIsKilled) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const std::string dir = temp_dir("orphan") + "/run", log = dir + ".log";
  // Silent after step 1 (no progress lines, no checkpoint lines): a rank that
  // writes to its stdout, a pipe to the dead mpirun, dies of SIGPIPE at once,
  // but between lines nothing else stopped it.
  pid_t mpirun = spawn(train_cmd(2, tiny_args(dir, 100000) + " --train.log_every 1000000"), log);
  bool running = false;
  for (int i = 0; i < 1200 && !running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    running = read_file(log).find("step      1/") != std::string::npos;
  }
  ASSERT_TRUE(running) << read_file(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // training, silently
  const std::vector<pid_t> ranks = children(mpirun);
  ASSERT_EQ(ranks.size(), 2u);
  kill(mpirun, SIGKILL);
  waitpid(mpirun, nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (pid_t r : ranks) {
    int st = 0;
    pid_t got = 0;
    for (int i = 0; i < 2000 && got == 0; ++i) {  // up to 20 s
      got = waitpid(r, &st, WNOHANG);
      if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (got == 0) kill(r, SIGKILL);
    ASSERT_EQ(got, r) << "rank " << r << " still running 20 s after its launcher died";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1)
        << "rank " << r << " ended by " << (WIFSIGNALED(st) ? "signal " + std::to_string(WTERMSIG(st)) : "exit " + std::to_string(WEXITSTATUS(st)))
        << ", not by its launcher watch";
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ranks exited %.3f s after mpirun was killed\n", secs);
  EXPECT_LT(secs, 5.0);
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  if (rc == 0) remove_temp_dirs();
  return rc;
}
