// The stop signals are taken by one listener thread, never by the threads that
// compute (signals.cpp: an interrupted training thread corrupted the heap).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "finemoe/signals.hpp"

namespace {

// Polls the flag for up to 10 s: the listener thread sets it asynchronously.
int wait_for_stop() {
  for (int i = 0; i < 1000; ++i) {
    int sig = 0;
    if (finemoe::stop_requested(&sig)) return sig;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

TEST(Signals, BlockedInTheCallerAndItsLaterThreadsAndSeenByTheListener) {
  EXPECT_FALSE(finemoe::stop_signals_blocked_in_this_thread());  // nothing installed yet
  finemoe::install_stop_signal_handlers();
  finemoe::install_stop_signal_handlers();  // idempotent: one listener
  EXPECT_TRUE(finemoe::stop_signals_blocked_in_this_thread());
  bool child_blocked = false;
  std::thread([&] { child_blocked = finemoe::stop_signals_blocked_in_this_thread(); }).join();
  EXPECT_TRUE(child_blocked) << "a thread started after the install must inherit the mask";

  for (int s : {SIGUSR1, SIGTERM, SIGINT}) {
    finemoe::clear_stop_request();
    ASSERT_FALSE(finemoe::stop_requested());
    ASSERT_EQ(kill(getpid(), s), 0);
    EXPECT_EQ(wait_for_stop(), s) << "signal " << s << " did not reach the listener";
    // Nothing is pending in this thread: the listener consumed it.
    sigset_t pending;
    sigpending(&pending);
    EXPECT_FALSE(sigismember(&pending, s));
  }
  finemoe::clear_stop_request();
}

}  // namespace
