// Finite-difference gradient checking helpers for the model tests.
//
// All checks are central differences in fp32 arithmetic (the ops are fp32),
// with the scalar objective accumulated in double. An element passes when
//     |analytic - numeric| <= atol + rtol · max(|analytic|, |numeric|).
// Each check reports the largest relative error it saw (printed, and recorded
// as a GoogleTest property) so the tolerances can be judged against reality.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace fmtest {

inline void fill_uniform(float* x, int64_t n, std::mt19937_64& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < n; ++i) x[i] = u(rng);
}

// Σ out·R in double: a random linear functional of an op's output, whose
// gradient with respect to the output is R itself (passed as dout).
inline double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

struct CheckResult {
  int checked = 0;
  int failed = 0;
  double max_abs_err = 0;
  double max_rel_err = 0;  // |a-n| / max(|a|,|n|) over elements with max(|a|,|n|) > atol
};

// Compares analytic gradient `grad` of objective f with respect to `x` against
// central differences at `indices`. f is re-evaluated with x perturbed.
inline CheckResult check_grad(const std::string& what, float* x, const float* grad,
                              const std::vector<int64_t>& indices, const std::function<double()>& f, float h,
                              double rtol, double atol) {
  CheckResult r;
  for (int64_t i : indices) {
    const float orig = x[i];
    x[i] = orig + h;
    const double fp = f();
    x[i] = orig - h;
    const double fm = f();
    x[i] = orig;
    // The step actually taken in fp32 (orig ± h is rounded).
    const double step = double(orig + h) - double(orig - h);
    const double num = (fp - fm) / step;
    const double ana = grad[i];
    const double err = std::fabs(ana - num);
    const double mag = std::max(std::fabs(ana), std::fabs(num));
    ++r.checked;
    r.max_abs_err = std::max(r.max_abs_err, err);
    if (mag > atol) r.max_rel_err = std::max(r.max_rel_err, err / mag);
    if (err > atol + rtol * mag) {
      ++r.failed;
      if (r.failed <= 5)
        ADD_FAILURE() << what << "[" << i << "]: analytic " << ana << " vs numeric " << num << " (err " << err
                      << ", tol " << atol + rtol * mag << ")";
    }
  }
  std::printf("  gradcheck %-28s n=%4d  max_abs_err=%.3e  max_rel_err=%.3e  (rtol %.0e, atol %.0e)\n",
              what.c_str(), r.checked, r.max_abs_err, r.max_rel_err, rtol, atol);
  ::testing::Test::RecordProperty(what + ".max_rel_err", std::to_string(r.max_rel_err));
  return r;
}

inline std::vector<int64_t> all_indices(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

inline std::vector<int64_t> sample_indices(int64_t n, int64_t k, std::mt19937_64& rng) {
  if (k >= n) return all_indices(n);
  std::vector<int64_t> v = all_indices(n);
  std::shuffle(v.begin(), v.end(), rng);
  v.resize(k);
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace fmtest
