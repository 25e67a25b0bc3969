// Expert-parallel dispatcher (see dispatcher_mpi.hpp for the data layout).
// Every exchange goes through the Comm interface, so the dispatcher runs over
// any implementation (host MPI today).
#include <chrono>
#include <string>

#include "finemoe/comm.hpp"
#include "finemoe/dispatcher_mpi.hpp"
#include "finemoe/error.hpp"

namespace finemoe {

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

AllToAllDispatcher::AllToAllDispatcher(const Comm& comm, Backend& be)
    : Dispatcher(be), comm_(comm), P_(comm.ep_size()), me_(comm.ep_rank()), exchange_(be) {
  rows_to_.resize(size_t(P_));
  rows_from_.resize(size_t(P_));
  elems_to_.resize(size_t(P_));
  elems_from_.resize(size_t(P_));
}

AllToAllDispatcher::~AllToAllDispatcher() = default;

void AllToAllDispatcher::dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width,
                                  DeviceBuffer<float>& recv, std::vector<int64_t>& recv_counts) {
  const int64_t EG = int64_t(send_counts.size());
  if (EG % P_ != 0)
    throw ConfigError("config key 'parallel.expert_parallel': " + std::to_string(P_) +
                      " does not divide the number of experts " + std::to_string(EG));
  K_ = EG / P_;
  width_ = width;
  from_.resize(size_t(P_ * K_));
  bytes_ = 0;
  seconds_ = 0;

  // 1. Per-expert counts: the K counts for peer q are send_counts[q·K, (q+1)·K);
  // from_[p·K + k] is what peer p sends to my local expert k.
  double t0 = now_s();
  comm_.alltoall(send_counts, from_, Group::ep);
  add_bytes(int64_t(P_ - 1) * K_ * int64_t(sizeof(int64_t)));
  add_seconds(now_s() - t0);

  int64_t total_from = 0;
  for (int p = 0; p < P_; ++p) {
    int64_t to = 0, from = 0;
    for (int64_t k = 0; k < K_; ++k) {
      to += send_counts[size_t(p * K_ + k)];
      from += from_[size_t(p * K_ + k)];
    }
    rows_to_[size_t(p)] = to;
    rows_from_[size_t(p)] = from;
    elems_to_[size_t(p)] = to * width;
    elems_from_[size_t(p)] = from * width;
    if (p != me_) add_bytes(elems_to_[size_t(p)] * int64_t(sizeof(float)));
    total_from += from;
  }

  // 2. Rows, source-major into the stage.
  exchange_.grow(total_from * width);
  t0 = now_s();
  comm_.alltoallv(send, elems_to_, exchange_.data(), elems_from_, Group::ep);
  add_seconds(now_s() - t0);

  // 3. Reorder to expert-major: local expert k gets source 0's rows, then 1's, …
  recv_counts.assign(size_t(K_), 0);
  for (int p = 0; p < P_; ++p)
    for (int64_t k = 0; k < K_; ++k) recv_counts[size_t(k)] += from_[size_t(p * K_ + k)];
  recv.grow(total_from * width);
  // Block (p,k) sits at src_off in the stage and dst_off in recv.
  int64_t src_off = 0;
  std::vector<int64_t>& dst_off = expert_cursor_;
  dst_off.assign(size_t(K_), 0);
  for (int64_t k = 1; k < K_; ++k) dst_off[size_t(k)] = dst_off[size_t(k - 1)] + recv_counts[size_t(k - 1)];
  for (int p = 0; p < P_; ++p)
    for (int64_t k = 0; k < K_; ++k) {
      const int64_t n = from_[size_t(p * K_ + k)];
      if (n) be_.copy(recv.data() + dst_off[size_t(k)] * width, exchange_.data() + src_off * width,
                      n * width * int64_t(sizeof(float)));
      dst_off[size_t(k)] += n;
      src_off += n;
    }
}

void AllToAllDispatcher::combine(const float* recv_layout, int64_t width, float* send_layout) {
  if (width != width_) throw Error("MoE dispatcher: combine width differs from the last dispatch");
  // 1. Expert-major -> source-major (inverse of dispatch step 3).
  std::vector<int64_t>& src_off = expert_cursor_;
  src_off.assign(size_t(K_), 0);
  for (int p = 0; p < P_; ++p)
    for (int64_t k = 0; k + 1 < K_; ++k) src_off[size_t(k + 1)] += from_[size_t(p * K_ + k)];
  for (int64_t k = 1; k < K_; ++k) src_off[size_t(k)] += src_off[size_t(k - 1)];
  int64_t dst = 0;
  for (int p = 0; p < P_; ++p)
    for (int64_t k = 0; k < K_; ++k) {
      const int64_t n = from_[size_t(p * K_ + k)];
      if (n) be_.copy(exchange_.data() + dst * width, recv_layout + src_off[size_t(k)] * width,
                      n * width * int64_t(sizeof(float)));
      src_off[size_t(k)] += n;
      dst += n;
    }
  // 2. Back to the senders: what I received from p returns to p, and what I
  // sent to q comes back from q, in the order I sent it — the send layout.
  const double t0 = now_s();
  comm_.alltoallv(exchange_.data(), elems_from_, send_layout, elems_to_, Group::ep);
  add_seconds(now_s() - t0);
  for (int p = 0; p < P_; ++p)
    if (p != me_) add_bytes(elems_from_[size_t(p)] * int64_t(sizeof(float)));
}

std::unique_ptr<Dispatcher> make_dispatcher(const Comm& comm, Backend& be) {
  if (comm.ep_size() == 1) return make_local_dispatcher(be);
  return std::make_unique<AllToAllDispatcher>(comm, be);
}

}  // namespace finemoe
