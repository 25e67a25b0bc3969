// LocalDispatcher: one EP rank owns every expert, so the recv layout equals the
// send layout (both sorted by global expert). The token-level calls therefore
// move nothing: dispatch_tokens is the permute (one gather), dispatch_rows
// and output_rows hand back the caller's own rows, combine_rows is a no-op.
// The row-level dispatch/combine keep the plain copy semantics of the
// Dispatcher contract.
#include "finemoe/moe.hpp"

namespace finemoe {
namespace {

class LocalDispatcher final : public Dispatcher {
 public:
  explicit LocalDispatcher(Backend& be) : Dispatcher(be) {}
  void dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width, DeviceBuffer<float>& recv,
                std::vector<int64_t>& recv_counts) override {
    const int64_t rows = total_rows(send_counts);
    recv.grow(rows * width);  // grow-only: no allocation in steady state
    if (rows) be_.copy(recv.data(), send, rows * width * int64_t(sizeof(float)));
    recv_counts.assign(send_counts.begin(), send_counts.end());
    last_rows_ = rows;
  }
  void combine(const float* recv_layout, int64_t width, float* send_layout) override {
    if (last_rows_) be_.copy(send_layout, recv_layout, last_rows_ * width * int64_t(sizeof(float)));
  }

  const float* dispatch_tokens(Backend& be, const float* x, const int64_t* tok, const std::vector<int64_t>& counts,
                               int64_t width, std::vector<int64_t>& recv_counts) override {
    check_backend(be);
    const int64_t A = total_rows(counts);
    inputs_.grow(A * width);
    be.moe_gather_rows(x, tok, A, width, inputs_.data());
    recv_counts.assign(counts.begin(), counts.end());
    last_rows_ = A;
    return inputs_.data();
  }
  const float* dispatch_rows(Backend& be, const float* send_rows, const std::vector<int64_t>& counts, int64_t,
                             std::vector<int64_t>& recv_counts) override {
    check_backend(be);
    recv_counts.assign(counts.begin(), counts.end());
    last_rows_ = total_rows(counts);
    return send_rows;
  }
  float* output_rows(float* send_layout, int64_t, int64_t) override { return send_layout; }
  void combine_rows(Backend& be, const float* recv_rows, int64_t width, float* send_layout) override {
    check_backend(be);
    if (recv_rows != send_layout) be.copy(send_layout, recv_rows, last_rows_ * width * int64_t(sizeof(float)));
  }
  bool rows_stay_on_rank() const override { return true; }

 private:
  int64_t last_rows_ = 0;  // rows of the last dispatch: combine moves the same rows back
};

}  // namespace

std::unique_ptr<Dispatcher> make_local_dispatcher(Backend& be) { return std::make_unique<LocalDispatcher>(be); }

}  // namespace finemoe
