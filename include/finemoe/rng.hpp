// Counter-based random numbers (Philox-4x32-10).
//
// A value is a pure function of (key, counter), so any position of any stream
// can be produced without generating the ones before it: restarts need only
// the counters, and ranks never depend on each other's draws. `split` derives
// independent child keys (per tensor, per rank, per purpose).
#pragma once
#include <array>
#include <cstdint>

namespace finemoe {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key);

class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  // Child generator, independent of this one and of other children.
  Rng split(uint64_t id) const;
  // Value number i of this stream (no state change).
  uint64_t u64_at(uint64_t i) const;
  // Uniform in [0,1) from 53 bits of value i.
  double uniform_at(uint64_t i) const;

  // Sequential interface on top of an internal counter.
  uint64_t next_u64() { return u64_at(counter_++); }
  double uniform() { return uniform_at(counter_++); }
  double normal();  // Box-Muller, uses two values
  // Normal truncated to [-2, 2] standard deviations, by rejection.
  double truncated_normal();

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }

 private:
  uint64_t seed_, stream_;
  uint64_t counter_ = 0;
};

}  // namespace finemoe
