#include "finemoe/signals.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <thread>

namespace finemoe {
namespace {
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int sig) { g_signal = sig; }
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : {SIGUSR1, SIGTERM, SIGINT}) sigaction(s, &sa, nullptr);
}

bool stop_requested(int* sig) {
  if (sig) *sig = int(g_signal);
  return g_signal != 0;
}

void clear_stop_request() { g_signal = 0; }

bool exit_when_launcher_dies(int poll_ms) {
  // Open MPI (mpirun, orted), PMIx and PMI launchers (srun) set these.
  bool launched = false;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_ID"})
    launched = launched || std::getenv(var) != nullptr;
  const pid_t parent = getppid();
  if (!launched || parent <= 1) return false;
  // A rank's stdout and stderr are pipes to its launcher. Once the launcher is
  // dead, any line written before the poll below notices (a rank's own log, or
  // the MPI library's message about the lost connection) would kill the rank
  // with SIGPIPE. Writes fail with EPIPE instead, and the watch ends the rank
  // with its own message and exit status 1.
  std::signal(SIGPIPE, SIG_IGN);
  std::thread([parent, poll_ms] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
      if (getppid() != parent) {
        // stderr is usually a pipe to the dead launcher (SIGPIPE is ignored above).
        std::fprintf(stderr, "error: the MPI launcher (parent process %d) is gone: exiting now, writing nothing more\n",
                     int(parent));
        std::fflush(stderr);
        _exit(1);
      }
    }
  }).detach();
  return true;
}

}  // namespace finemoe
