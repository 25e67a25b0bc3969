#include "finemoe/rng.hpp"

#include <cmath>

namespace finemoe {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * c[0];
    uint64_t p1 = uint64_t(M1) * c[2];
    std::array<uint32_t, 4> n = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1),
                                 uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    c = n;
    k[0] += W0;
    k[1] += W1;
  }
  return c;
}

namespace {
uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

Rng Rng::split(uint64_t id) const { return Rng(mix64(seed_ ^ mix64(stream_ + 0x1234567ull)), mix64(id) ^ stream_); }

uint64_t Rng::u64_at(uint64_t i) const {
  auto r = philox4x32({uint32_t(i), uint32_t(i >> 32), uint32_t(stream_), uint32_t(stream_ >> 32)},
                      {uint32_t(seed_), uint32_t(seed_ >> 32)});
  return (uint64_t(r[0]) << 32) | r[1];
}

double Rng::uniform_at(uint64_t i) const { return double(u64_at(i) >> 11) * 0x1.0p-53; }

double Rng::normal() {
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

double Rng::truncated_normal() {
  for (;;) {
    double z = normal();
    if (z >= -2.0 && z <= 2.0) return z;
  }
}

}  // namespace finemoe
