// The Dispatcher's token-level calls, built on its row-level exchange
// (dispatch / combine): permute with the backend's gather, then exchange.
// Implementations whose layouts coincide (LocalDispatcher) override them to
// skip the copies.
#include "finemoe/error.hpp"
#include "finemoe/moe.hpp"

namespace finemoe {


void Dispatcher::check_backend(const Backend& be) const {
  if (&be != &be_) throw Error("MoE dispatcher: called with another backend than the one its buffers live in");
}

int64_t Dispatcher::total_rows(const std::vector<int64_t>& counts) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

const float* Dispatcher::dispatch_tokens(Backend& be, const float* x, const int64_t* tok,
                                         const std::vector<int64_t>& counts, int64_t width,
                                         std::vector<int64_t>& recv_counts) {
  check_backend(be);
  const int64_t A = total_rows(counts);
  stage_.grow(A * width);
  be.moe_gather_rows(x, tok, A, width, stage_.data());
  dispatch(stage_.data(), counts, width, inputs_, recv_counts);
  return inputs_.data();
}

const float* Dispatcher::dispatch_rows(Backend& be, const float* send_rows, const std::vector<int64_t>& counts,
                                       int64_t width, std::vector<int64_t>& recv_counts) {
  check_backend(be);
  dispatch(send_rows, counts, width, rows_, recv_counts);
  return rows_.data();
}

float* Dispatcher::output_rows(float*, int64_t rows, int64_t width) {
  out_.grow(rows * width);
  return out_.data();
}

void Dispatcher::combine_rows(Backend& be, const float* recv_rows, int64_t width, float* send_layout) {
  check_backend(be);
  combine(recv_rows, width, send_layout);
}

}  // namespace finemoe
