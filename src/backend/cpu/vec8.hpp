// 8-float vectors (GCC vector extensions) for the model's elementwise and
// reduction loops whose operation order must be written down (fixed lanes),
// not left to the auto-vectoriser. Loads and stores are unaligned (memcpy).
#pragma once
#include <cstdint>
#include <cstring>

namespace finemoe::ops::vec8 {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }

}  // namespace finemoe::ops::vec8
