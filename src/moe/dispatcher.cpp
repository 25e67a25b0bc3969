// The Dispatcher's token-level calls, built on its row-level exchange
// (dispatch / combine): permute with the backend's gather, then exchange.
// Implementations whose layouts coincide (LocalDispatcher) override them to
// skip the copies.
#include "finemoe/moe.hpp"

namespace finemoe {
namespace {
int64_t total(const std::vector<int64_t>& counts) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}
void ensure(Buffer<float>& b, int64_t n) {
  if (int64_t(b.size()) < n) b.resize(size_t(n));  // grow-only
}
}  // namespace

const float* Dispatcher::dispatch_tokens(Backend& be, const float* x, const int64_t* tok,
                                         const std::vector<int64_t>& counts, int64_t width,
                                         std::vector<int64_t>& recv_counts) {
  const int64_t A = total(counts);
  ensure(stage_, A * width);
  be.moe_gather_rows(x, tok, A, width, stage_.data());
  dispatch(stage_.data(), counts, width, inputs_, recv_counts);
  return inputs_.data();
}

const float* Dispatcher::dispatch_rows(Backend&, const float* send_rows, const std::vector<int64_t>& counts,
                                       int64_t width, std::vector<int64_t>& recv_counts) {
  dispatch(send_rows, counts, width, rows_, recv_counts);
  return rows_.data();
}

float* Dispatcher::output_rows(float*, int64_t rows, int64_t width) {
  ensure(out_, rows * width);
  return out_.data();
}

void Dispatcher::combine_rows(Backend&, const float* recv_rows, int64_t width, float* send_layout) {
  combine(recv_rows, width, send_layout);
}

}  // namespace finemoe
