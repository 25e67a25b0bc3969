#include "finemoe/signals.hpp"

#include <csignal>
#include <initializer_list>

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

}  // namespace finemoe
