// The process grid (world = DP × EP) and the collectives finemoe needs: an
// interface, with MPI kept out of every header. Code that communicates takes
// a `const Comm&` and never names an implementation; only the code that builds
// the communicator does (the trainer, moe-train's main, tests).
//
// Rank r of the world has ep_rank = r % EP and dp_rank = r / EP: the EP group
// of a rank is the EP consecutive ranks {dp_rank·EP, …, dp_rank·EP + EP − 1},
// which share one layer's experts (a full copy of the model per EP group); the
// DP group is {ep_rank, ep_rank + EP, …}: the replicas of the same expert shard.
//
// Memory. The buffer collectives, allreduce_sum(float*) and alltoallv, take
// pointers in the memory of the communicator's device, memory(): host memory
// for the MPI implementation, device memory for a device one. Everything else
// (scalars, the int64 counts, flags, strings, small vectors) is host memory
// whatever the implementation: it is what the host needs to decide and size.
//
// Contract of every implementation:
// - Collective: every rank of the group makes the same calls in the same order.
// - Reductions are DETERMINISTIC: contributions are summed in rank order
//   (reduce-scatter by all-to-all, local ordered sum, all-gather), so the
//   same rank count gives bit-identical results run to run, whatever the
//   transport (a ring or tree allreduce would not).
// - Counts are 64-bit; an implementation whose transport takes smaller counts
//   splits the buffer (the MPI one: pieces of at most max_count() elements,
//   each element still summed over the ranks in rank order, so the bits do not
//   depend on the piece size).
// - No allocation per call in steady state: scratch lives in the object,
//   grow-only. A Comm is used from one thread.
// - A call's result is usable by what the caller does next (on return for
//   the host implementation; in stream order on the device for a device one).
//
// Implementations: MpiComm (comm_mpi.hpp, src/parallel/comm_mpi.cpp), host
// MPI, the one built today. The tests add a threads-as-ranks one
// (tests/parallel/thread_comm.hpp) to show that callers go through this class.
//
// How an NCCL implementation slots in (NcclComm, planned, module
// backend_cuda or its own; not written yet):
// - The launch stays MPI: init()/finalize() below, the grid from the MPI
//   world (set_grid), and one MPI communicator per group as in MpiComm. For
//   each group, group rank 0 calls ncclGetUniqueId, broadcasts the id over
//   the group's MPI communicator (MPI_Bcast of the ncclUniqueId bytes), and
//   every rank calls ncclCommInitRank(group size, id, group rank).
// - One cudaStream_t per communicator (or the backend's stream), on which the
//   buffer collectives are enqueued; memory() returns Device::cuda, so
//   allreduce_sum(float*) and alltoallv take device pointers (the backend's
//   DeviceBuffers). Ordering against the backend's kernels is by stream
//   (events where the streams differ).
// - allreduce_sum(float*) keeps the rank-order sum rather than ncclAllReduce:
//   ncclSend/ncclRecv of the P chunks inside ncclGroupStart/End (an
//   all-to-all), a kernel summing the chunks in rank order, ncclAllGather;
//   the chunks in a grow-only device scratch. alltoallv is ncclSend/ncclRecv
//   per peer in one group call. NCCL counts are size_t: no pieces.
// - What stays host-side, over the MPI communicators: the scalar reductions
//   (allreduce_sum(double), allreduce_max, any), barrier, broadcast of
//   strings and bytes, allgather of small host vectors and strings, the int64
//   counts (alltoall, allreduce_sum(int64_t*)), ranks_on_this_node, and
//   native() (parallel HDF5 needs the MPI communicator).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "finemoe/kernels.hpp"  // Device

namespace finemoe {

enum class Group { world, ep, dp };

class Comm {
 public:
  // ---- the launch (MPI, whatever carries the collectives) -------------------
  // MPI_Init / MPI_Finalize (thread level FUNNELED). Safe to call init twice.
  static void init(int* argc, char*** argv);
  static void finalize();
  static bool initialized();
  // Abort every rank with `code` (used after printing an error once).
  [[noreturn]] static void abort_all(int code);

  // Largest element count one MPI call is given (default INT_MAX): the piece
  // size of the MPI implementation. Tests lower it to exercise the piecewise
  // paths on small buffers; n <= 0 restores the default. Process-wide.
  static void set_max_count(int64_t n);
  static int64_t max_count();

  virtual ~Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // ---- the grid (filled in by the implementation with set_grid) -------------
  int rank() const { return rank_; }
  int size() const { return size_; }
  int ep_rank() const { return ep_rank_; }
  int ep_size() const { return ep_size_; }
  int dp_rank() const { return dp_rank_; }
  int dp_size() const { return dp_size_; }
  int group_size(Group g) const { return g == Group::world ? size_ : g == Group::ep ? ep_size_ : dp_size_; }
  int group_rank(Group g) const { return g == Group::world ? rank_ : g == Group::ep ? ep_rank_ : dp_rank_; }

  // Where the pointers of the buffer collectives (allreduce_sum(float*),
  // alltoallv) live: Device::cpu (host memory) for MPI.
  virtual Device memory() const = 0;
  // Ranks of this launch on this node (shared memory), for memory checks.
  // Collective over the world: every rank must call it at the same point.
  virtual int ranks_on_this_node() const = 0;

  // ---- collectives ------------------------------------------------------------
  // In-place deterministic sum over the group; `buf` in memory().
  virtual void allreduce_sum(float* buf, int64_t n, Group g) const = 0;
  // Host scalars: the sum in rank order, the maximum.
  virtual double allreduce_sum(double x, Group g) const = 0;
  virtual double allreduce_max(double x, Group g) const = 0;
  // In-place sum of host int64 counts (exact: any order gives the same).
  virtual void allreduce_sum(int64_t* buf, int64_t n, Group g) const = 0;
  // True on every rank if `flag` is true on any rank (world).
  virtual bool any(bool flag) const = 0;
  virtual void barrier() const = 0;  // world
  // Root's bytes on every rank (world; any length).
  virtual void broadcast(std::vector<char>& bytes, int root = 0) const = 0;
  void broadcast(std::string& s, int root = 0) const;  // through the bytes form
  // Every rank's value, in rank order, on every rank (world). The fixed-size
  // form needs the same `mine.size()` on every rank; the string form takes
  // any length (lengths are exchanged first), so it cannot truncate.
  virtual std::vector<uint64_t> allgather(const std::vector<uint64_t>& mine) const = 0;
  virtual std::vector<std::string> allgather(const std::string& mine) const = 0;

  // Variable all-to-all inside a group; `send` and `recv` in memory(). Counts
  // are in elements, one per group rank (host); displacements are the prefix
  // sums (packed buffers).
  virtual void alltoallv(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts, Group g) const = 0;
  // Exchange host int64 blocks: `send` holds P blocks of B = send.size() / P
  // values (B the same on every rank), block j for group rank j; `recv` is
  // resized to P·B and its block j is what rank j sent to me. B = 1: one value
  // per destination.
  virtual void alltoall(const std::vector<int64_t>& send, std::vector<int64_t>& recv, Group g) const = 0;

  // The group's MPI communicator as an opaque handle (MPI_Comm) for io code
  // that needs it (parallel HDF5). Cast with `*static_cast<const MPI_Comm*>(...)`.
  // Every implementation launched by MPI has one; one without throws Error.
  virtual const void* native(Group g) const = 0;

 protected:
  Comm() = default;
  // Sets the grid for world rank `rank` of `size` with EP = expert_parallel;
  // throws ConfigError if EP does not divide the world size.
  void set_grid(int rank, int size, int expert_parallel);

 private:
  int rank_ = 0, size_ = 1, ep_rank_ = 0, ep_size_ = 1, dp_rank_ = 0, dp_size_ = 1;
};

}  // namespace finemoe
