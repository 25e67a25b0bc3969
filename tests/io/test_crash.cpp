// Crash safety of checkpoints: a writer process saves checkpoints in a loop
// and is killed with SIGKILL, several times in the same run directory. Half
// the kills come at a random moment (start-up included); the other half are
// aimed: the test waits until the writer has a checkpoint write in progress
// (its .tmp_step_N.h5 holds data) and kills it within half a millisecond. After every
// kill, LATEST must name a checkpoint that loads, and EVERY surviving
// step_N.h5 must load with every value matching the step it records; the
// next writer must resume from LATEST. At least 3 of the 4 aimed kills must
// land mid-write (a temp file left behind), so the test really covers a kill
// during a write. No MPI in this process: writer and checker are separate
// programs (io_ckpt_writer) started as MPI singletons.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
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

// Runs the checker; returns its exit code, the LATEST step and the number of
// step files it verified.
int check(const std::string& dir, long long& step, int& files) {
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
  step = -1;
  files = 0;
  std::sscanf(out.c_str(), "%lld %d", &step, &files);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

// Names of the temp files of writes in progress (or killed) in dir; with
// `with_data`, only those that already hold bytes (HDF5 may create and
// truncate the file while opening it, before the write proper).
std::vector<std::string> temp_files(const std::string& dir, bool with_data = false) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name).rfind(".tmp_step_", 0) != 0) continue;
    struct stat st;
    if (with_data && (::stat((dir + "/" + e->d_name).c_str(), &st) != 0 || st.st_size == 0)) continue;
    out.push_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

}  // namespace

TEST(CheckpointCrash, KillMinus9DuringWritesLeavesEveryCheckpointValid) {
  const std::string dir = iotest::fresh_dir("ckpt_crash"), ckdir = dir + "/checkpoints";
  std::mt19937 rng(4242);  // fixed: the same kill plan every run
  const int kKills = 8;    // even: random moment; odd: aimed at a write in progress
  int checked = 0, aimed = 0, aimed_mid_write = 0;
  long long last_step = 0;
  for (int k = 0; k < kKills; ++k) {
    const bool aim = k % 2 == 1;
    pid_t pid = spawn("write", dir);
    ASSERT_GT(pid, 0);
    int delay_ms = 0;
    if (!aim) {
      // MPI start-up takes a few hundred ms; then each save takes some tens.
      delay_ms = std::uniform_int_distribution<int>(400, 1400)(rng);
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      bool writing = false;
      while (!(writing = !temp_files(ckdir, true).empty()) &&
             std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      ASSERT_TRUE(writing) << "the writer never started a checkpoint";
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 500)(rng)));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited on its own with " << WEXITSTATUS(status);
    const std::vector<std::string> left = temp_files(ckdir);
    aimed += aim;
    aimed_mid_write += aim && !left.empty();
    if (!iotest::file_exists(ckdir + "/LATEST")) {
      EXPECT_FALSE(aim) << "an aimed kill comes after the first complete checkpoint";
      std::printf("[ kill %d ] after %4d ms: no checkpoint yet\n", k, delay_ms);
      continue;
    }
    long long step = -1;
    int files = 0;
    const int rc = check(dir, step, files);
    EXPECT_EQ(rc, 0) << "kill " << k << ": LATEST or another step file is not a valid checkpoint";
    EXPECT_GE(files, 1);
    EXPECT_GE(step, last_step) << "LATEST went backwards";
    std::printf("[ kill %d ] %s: LATEST = step %lld, %d checkpoint(s) verified value by value%s\n", k,
                aim ? "aimed at a write" : ("after " + std::to_string(delay_ms) + " ms").c_str(), step, files,
                left.empty() ? "" : (" (killed mid-write: " + left[0] + " left)").c_str());
    last_step = step;
    ++checked;
    // The next writer would delete them too; removing them here means an
    // aimed kill only ever sees the temp file of a write in progress.
    for (const auto& t : left) ::unlink((ckdir + "/" + t).c_str());
  }
  std::printf("%d kills, %d verified, %d of %d aimed kills landed mid-write\n", kKills, checked, aimed_mid_write,
              aimed);
  EXPECT_GE(checked, kKills / 2 + 1);  // every aimed kill, and at least one random one
  EXPECT_GE(aimed_mid_write, 3) << "the aimed kills did not hit writes in progress";
  EXPECT_GT(last_step, 1);
}
