// Named scoped wall-clock timers for phase breakdowns (moe-bench).
//
//   { FINEMOE_PROFILE("attention"); ... }   // adds the scope's time to "attention"
//
// Off by default; when off a scope costs one relaxed atomic load. Times are
// inclusive (a nested scope's time also counts in its parent) and only scopes
// opened outside OpenMP parallel regions are recorded, so the numbers are
// wall time of the calling (main) thread. The backend records "gemm" and
// "grouped_gemm" itself; model code may add its own phase names
// (embedding, attention, router, dispatch, experts, layernorm, head_loss, ...).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace finemoe::profile {

void set_enabled(bool on);
bool enabled();
void reset();

struct Entry {
  std::string name;
  double seconds = 0;
  int64_t calls = 0;
};
// Every name recorded since reset(), in first-seen order.
std::vector<Entry> snapshot();

// Adds `seconds` to `name` (for timers that are not scopes).
void add(const char* name, double seconds);

class Scope {
 public:
  explicit Scope(const char* name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  double t0_;
};

}  // namespace finemoe::profile

#define FINEMOE_PROFILE_CAT2(a, b) a##b
#define FINEMOE_PROFILE_CAT(a, b) FINEMOE_PROFILE_CAT2(a, b)
#define FINEMOE_PROFILE(name) ::finemoe::profile::Scope FINEMOE_PROFILE_CAT(finemoe_profile_scope_, __LINE__)(name)
