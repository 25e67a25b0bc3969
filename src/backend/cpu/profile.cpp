// Implementation of include/finemoe/profile.hpp: a small name -> seconds table
// behind a mutex (scopes are coarse: a few hundred per step at most).
#include "finemoe/profile.hpp"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

namespace finemoe::profile {
namespace {
std::atomic<bool> g_on{false};
std::mutex g_mu;
std::vector<Entry> g_entries;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void set_enabled(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_entries.clear();
}

std::vector<Entry> snapshot() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_entries;
}

void add(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& e : g_entries)
    if (e.name == name) {
      e.seconds += seconds;
      e.calls += 1;
      return;
    }
  g_entries.push_back({name, seconds, 1});
}

Scope::Scope(const char* name) : name_(nullptr), t0_(0) {
  if (!enabled() || omp_in_parallel()) return;
  name_ = name;
  t0_ = now_s();
}

Scope::~Scope() {
  if (name_) add(name_, now_s() - t0_);
}

}  // namespace finemoe::profile
