// Small OpenMP helpers shared by the CPU backend's kernels (private to src/backend/cpu).
#pragma once
#include <omp.h>

#include <cstdint>
#include <utility>

namespace finemoe::ops {

// The calling thread's contiguous share [begin, end) of n items, inside an
// `omp parallel` region. Used for column-sliced reductions (bias and
// LayerNorm weight gradients, embedding scatter): every thread owns its
// columns, so there are no atomics and results do not depend on the thread count.
inline std::pair<int64_t, int64_t> thread_range(int64_t n) {
  const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
  const int64_t chunk = (n + nt - 1) / nt;
  const int64_t b = t * chunk < n ? t * chunk : n;
  const int64_t e = b + chunk < n ? b + chunk : n;
  return {b, e};
}

}  // namespace finemoe::ops
