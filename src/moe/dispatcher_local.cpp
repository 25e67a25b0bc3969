// LocalDispatcher: one EP rank owns every expert, so the recv layout equals the
// send layout (both sorted by global expert) and dispatch/combine are copies.
// Keeping the copy (rather than aliasing) lets the MoE layer treat every
// dispatcher alike; it is O(rows·d), tiny next to the expert GEMMs.
#include <cstring>

#include "finemoe/moe.hpp"

namespace finemoe {
namespace {

class LocalDispatcher final : public Dispatcher {
 public:
  void dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width, Buffer<float>& recv,
                std::vector<int64_t>& recv_counts) override {
    int64_t rows = 0;
    for (int64_t c : send_counts) rows += c;
    const size_t n = size_t(rows * width);
    if (recv.size() < n) recv.resize(n);  // grow-only: no allocation in steady state
    if (n) std::memcpy(recv.data(), send, n * sizeof(float));
    recv_counts.assign(send_counts.begin(), send_counts.end());
    rows_ = rows;
  }
  void combine(const float* recv_layout, int64_t width, float* send_layout) override {
    if (rows_) std::memcpy(send_layout, recv_layout, size_t(rows_ * width) * sizeof(float));
  }

 private:
  int64_t rows_ = 0;  // rows of the last dispatch: combine moves the same rows back
};

}  // namespace

std::unique_ptr<Dispatcher> make_local_dispatcher() { return std::make_unique<LocalDispatcher>(); }

}  // namespace finemoe
