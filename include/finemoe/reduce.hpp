// Deterministic parallel reductions.
//
// `#pragma omp reduction` combines thread partials in whatever order threads
// finish, so the last bits of a float sum change from run to run. finemoe
// promises bit-identical runs (same rank count) and bit-exact resume, so every
// reduction that feeds training uses fixed-size chunks summed in index order:
// the result depends on neither timing nor the thread count.
#pragma once
#include <cstdint>

namespace finemoe {

constexpr int64_t kReduceChunk = 4096;

double deterministic_sum(const float* x, int64_t n);
double deterministic_sum_squares(const float* x, int64_t n);

}  // namespace finemoe
