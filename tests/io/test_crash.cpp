// Crash safety of checkpoints: a writer process saves checkpoints in a loop
// and is killed with SIGKILL at random moments, several times in the same run
// directory. After every kill, LATEST must name a checkpoint that loads and
// whose every value matches the step it records, and the next writer must
// resume from it. No MPI in this process: writer and checker are separate
// programs (io_ckpt_writer) started as MPI singletons.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "io_test_util.hpp"

#ifndef IO_CKPT_WRITER
#error "IO_CKPT_WRITER (path of io_ckpt_writer) must be defined"
#endif

namespace {

pid_t spawn(const std::string& mode, const std::string& dir, int out_fd = -1) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (out_fd >= 0) ::dup2(out_fd, 1);
    ::execl(IO_CKPT_WRITER, IO_CKPT_WRITER, mode.c_str(), dir.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Runs the checker; returns its exit code and the step it printed.
int check(const std::string& dir, long long& step) {
  int p[2];
  if (::pipe(p) != 0) return -1;
  pid_t pid = spawn("check", dir, p[1]);
  ::close(p[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  step = std::atoll(out.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

}  // namespace

TEST(CheckpointCrash, KillMinus9AtRandomMomentsLeavesLatestReadable) {
  const std::string dir = iotest::fresh_dir("ckpt_crash");
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::printf("seed %u\n", seed);
  const int kKills = 6;
  int checked = 0, mid_write = 0;
  long long last_step = 0;
  for (int k = 0; k < kKills; ++k) {
    pid_t pid = spawn("write", dir);
    ASSERT_GT(pid, 0);
    // MPI start-up takes a few hundred ms; then each save takes some tens.
    const int delay_ms = std::uniform_int_distribution<int>(400, 1400)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited on its own with " << WEXITSTATUS(status);
    bool tmp_left = false;
    for (long long s = last_step; s < last_step + 100000 && !tmp_left; ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "/checkpoints/.tmp_step_%07lld.h5", s);
      tmp_left = iotest::file_exists(dir + name);
    }
    mid_write += tmp_left;
    if (!iotest::file_exists(dir + "/checkpoints/LATEST")) {
      std::printf("[ kill %d ] after %4d ms: no checkpoint yet\n", k, delay_ms);
      continue;
    }
    long long step = -1;
    const int rc = check(dir, step);
    EXPECT_EQ(rc, 0) << "kill " << k << " after " << delay_ms << " ms: LATEST does not name a valid checkpoint";
    EXPECT_GE(step, last_step) << "LATEST went backwards";
    std::printf("[ kill %d ] after %4d ms: LATEST = step %lld verified%s\n", k, delay_ms, step,
                tmp_left ? " (killed mid-write: temp file left)" : "");
    last_step = step;
    ++checked;
  }
  std::printf("%d kills, %d verified checkpoints, %d kills landed mid-write\n", kKills, checked, mid_write);
  EXPECT_GE(checked, kKills - 2);
  EXPECT_GT(last_step, 1);
}
