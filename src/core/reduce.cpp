#include "finemoe/reduce.hpp"

#include <cstddef>
#include <vector>

namespace finemoe {
namespace {
template <typename F>
double chunked(int64_t n, F term) {
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(std::size_t(chunks > 0 ? chunks : 0), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kReduceChunk, hi = lo + kReduceChunk < n ? lo + kReduceChunk : n;
    double s = 0;
    for (int64_t i = lo; i < hi; ++i) s += term(i);
    partial[std::size_t(c)] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}
}  // namespace

double deterministic_sum(const float* x, int64_t n) {
  return chunked(n, [x](int64_t i) { return double(x[i]); });
}

double deterministic_sum_squares(const float* x, int64_t n) {
  return chunked(n, [x](int64_t i) { return double(x[i]) * double(x[i]); });
}

}  // namespace finemoe
