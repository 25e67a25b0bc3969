// CpuBackend's parameter initialisation: truncated-normal rows from
// counter-based streams, one stream per global row, rows over OpenMP threads.
// This is the loop init_parameters (src/model/init.cpp) ran before it moved
// behind the backend, unchanged, so initial weights are bit-identical.
#include "cpu_backend.hpp"
#include "finemoe/rng.hpp"

namespace finemoe::cpu {

void CpuBackend::init_truncated_normal(float* w, int64_t rows, int64_t row_elems, int64_t row0, double sigma,
                                       uint64_t seed, uint64_t stream) {
  const Rng tensor_rng(seed, stream);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    Rng rng = tensor_rng.split(uint64_t(row0 + r));
    float* row = w + r * row_elems;
    for (int64_t i = 0; i < row_elems; ++i) row[i] = float(sigma * rng.truncated_normal());
  }
}

}  // namespace finemoe::cpu
