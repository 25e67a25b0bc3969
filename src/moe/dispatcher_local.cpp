// LocalDispatcher: one EP rank owns every expert, so the recv layout equals the
// send layout (both sorted by global expert) and dispatch/combine are copies.
// The MoE layer skips these copies when is_local_dispatcher() says it runs on
// this dispatcher (its rows go to the experts directly); other users get the
// plain copy semantics of the Dispatcher contract.
#include <cstring>

#include "finemoe/moe.hpp"
#include "workspace.hpp"

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

namespace moe {
bool is_local_dispatcher(const Dispatcher& d) { return dynamic_cast<const LocalDispatcher*>(&d) != nullptr; }
}  // namespace moe

}  // namespace finemoe
