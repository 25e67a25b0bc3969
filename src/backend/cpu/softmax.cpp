// The causal softmax of attention and its backward, row by row.
//
// Every loop here is written so that it vectorises (AVX2 via GCC vector
// extensions) with a FIXED order of operations, so that results do not depend
// on the thread count or on what the compiler does to a plain loop:
// - row sums use 8 lane accumulators over j = 8i + l, combined pairwise at the
//   end (the same order for every row length and thread count);
// - exp is a vector exp (Cephes-style range reduction and degree-6
//   polynomial, max relative error about 2 ulp vs std::exp, see the test):
//   glibc's scalar expf was most of attention's non-GEMM time.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops.hpp"
#include "finemoe/profile.hpp"
#include "vec8.hpp"

namespace finemoe::ops {

namespace {

using namespace vec8;
inline float hsum(v8f v) {  // fixed pairwise order
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

// exp(x) for x <= 0 (softmax arguments are p - max). Below -87.3 the result
// is 0 (exp would be a denormal there; a softmax row's sum is >= 1).
inline v8f exp8(v8f x) {
  const v8f lo = splat(-87.3f);
  const v8i small = x < lo;
  x = x < lo ? lo : x;
  // n = round(x / ln 2) with the 1.5·2^23 trick; r = x - n ln 2 in two parts.
  const v8f magic = splat(12582912.0f);
  v8f t = x * splat(1.44269504088896341f) + magic;
  const v8f n = t - magic;
  v8f r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  // Cephes expf polynomial on |r| <= ln2/2
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  // scale by 2^n: add n to the exponent bits
  v8i ni;
  std::memcpy(&ni, &t, sizeof ni);
  ni = (ni - 0x4B400000) << 23;  // t's mantissa holds n + 1.5·2^23
  v8i bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += ni;
  bits = small ? v8i{} : bits;
  v8f out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

float row_max(const float* p, int64_t n) {  // n >= 1; max is exact in any order
  v8f m = splat(p[0]);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const v8f v = load8(p + j);
    m = v > m ? v : m;
  }
  float mx = m[0];
  for (int l = 1; l < 8; ++l) mx = m[l] > mx ? m[l] : mx;
  for (; j < n; ++j) mx = p[j] > mx ? p[j] : mx;
  return mx;
}

}  // namespace

float exp_nonpositive(float x) {
  float in[8] = {x, 0, 0, 0, 0, 0, 0, 0}, out[8];
  store8(out, exp8(load8(in)));
  return out[0];
}

void causal_softmax_forward(float* att, int64_t R, int64_t T) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    float* p = att + r * T;
    const int64_t n = r % T + 1;  // keys 0..t
    const float mx = row_max(p, n);
    const v8f vmx = splat(mx);
    v8f acc = splat(0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const v8f e = exp8(load8(p + j) - vmx);
      store8(p + j, e);
      acc += e;
    }
    if (j < n) {  // tail: lanes past n contribute 0
      float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t k = j; k < n; ++k) tail[k - j] = p[k] - mx;
      v8f e = exp8(load8(tail));
      for (int64_t k = n - j; k < 8; ++k) e[k] = 0.0f;
      for (int64_t k = j; k < n; ++k) p[k] = e[k - j];
      acc += e;
    }
    const float inv = 1.0f / hsum(acc);
    for (int64_t k = 0; k < n; ++k) p[k] *= inv;
    for (int64_t k = n; k < T; ++k) p[k] = 0.0f;
  }
}

void causal_softmax_backward(float* ds, const float* att, int64_t R, int64_t T, float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const float* p = att + r * T;
    float* g = ds + r * T;
    const int64_t n = r % T + 1;
    v8f acc = splat(0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) acc += load8(p + j) * load8(g + j);
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = j; k < n; ++k) tail[k - j] = p[k] * g[k];
    acc += load8(tail);
    const float s = hsum(acc);
    for (int64_t k = 0; k < n; ++k) g[k] = scale * p[k] * (g[k] - s);
    for (int64_t k = n; k < T; ++k) g[k] = 0.0f;
  }
}

}  // namespace finemoe::ops
