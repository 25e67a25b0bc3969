// Expert-parallel token dispatcher: the Dispatcher of moe.hpp over the EP
// group of a Comm, with MPI kept out of this header.
//
// dispatch(): each rank's assigned rows are sorted by global expert, and EP
// rank q owns experts [q·K, (q+1)·K), so the rows for rank q are one
// contiguous block. Step 1 exchanges the K per-expert counts with every peer
// (all-to-all), step 2 the rows themselves (all-to-allv). Rows arrive grouped
// by source rank; they are then reordered to the contract's layout: for each
// local expert, rows of source rank 0, 1, … in the sender's order. Because the
// sender orders an expert's rows by token index and rank r holds the r-th
// slice of the batch, an expert sees its rows in global token order, exactly
// as one rank processing the whole batch would.
//
// combine(): the exact inverse (reorder to source-major, all-to-allv back).
// Backward reuses dispatch/combine in swapped roles, so no extra code.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "finemoe/device.hpp"  // cpu_backend(), make_dispatcher's default
#include "finemoe/kernels.hpp"
#include "finemoe/moe.hpp"

namespace finemoe {

class Comm;

class AllToAllDispatcher final : public Dispatcher {
 public:
  // Keeps references to `comm` and `be` (the rank's backend, whose memory
  // holds the rows), which must outlive the dispatcher. The rows go through
  // comm's all-to-allv, so comm.memory() must be where the backend keeps them
  // (host MPI and the CPU backend today).
  AllToAllDispatcher(const Comm& comm, Backend& be);
  ~AllToAllDispatcher() override;
  void dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width, DeviceBuffer<float>& recv,
                std::vector<int64_t>& recv_counts) override;
  void combine(const float* recv_layout, int64_t width, float* send_layout) override;
  // Bytes this rank sent to OTHER ranks in the last dispatch+combine (counts
  // and rows; rows a rank keeps for its own experts are not counted).
  int64_t last_bytes_sent() const override { return bytes_; }
  // Wall seconds spent in the collectives of the last dispatch+combine.
  double last_comm_seconds() const { return seconds_; }

 private:
  const Comm& comm_;
  int P_ = 1, me_ = 0;
  int64_t K_ = 0, width_ = 0;
  std::vector<int64_t> from_;           // [P·K] rows source p sends to my local expert k
  std::vector<int64_t> rows_to_, rows_from_;  // [P] rows per peer
  std::vector<int64_t> elems_to_, elems_from_;  // [P] floats per peer (rows·width)
  DeviceBuffer<float> exchange_;        // source-major rows (grow-only)
  std::vector<int64_t> expert_cursor_;  // [K] scratch offsets for the reorders
  void add_bytes(int64_t b) { bytes_ += b; total_bytes_ += b; }
  void add_seconds(double s) { seconds_ += s; total_seconds_ += s; }
  int64_t bytes_ = 0;
  double seconds_ = 0;
};

// The dispatcher for this process grid: LocalDispatcher when EP = 1 (pure
// data parallel or a single rank), AllToAllDispatcher otherwise.
// `be`: the rank's backend (the dispatcher's rows live in its memory).
std::unique_ptr<Dispatcher> make_dispatcher(const Comm& comm, Backend& be = cpu_backend());

}  // namespace finemoe
