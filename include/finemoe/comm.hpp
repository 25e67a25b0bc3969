// The process grid (world = DP × EP) and the collectives finemoe needs, with
// MPI kept out of every other header.
//
// Rank r of the world has ep_rank = r % EP and dp_rank = r / EP: the EP group
// of a rank is the EP consecutive ranks {dp_rank·EP, …, dp_rank·EP + EP − 1},
// which share one layer's experts (a full copy of the model per EP group); the
// DP group is {ep_rank, ep_rank + EP, …}: the replicas of the same expert shard.
//
// Reductions are DETERMINISTIC: every rank sums contributions in rank order
// (reduce-scatter by all-to-all, local ordered sum, all-gather), so the same
// rank count gives bit-identical results run to run.
//
// Counts are 64-bit everywhere. MPI's are int, so a buffer longer than
// max_count() elements is moved in pieces of at most that many (each element
// is still summed over the ranks in rank order, so the bits do not depend on
// the piece size). The collectives keep their scratch in the Comm object,
// grow-only: a training step's reductions do not allocate. Buffers are host
// memory: this is the host MPI implementation; a device (NCCL) one would take
// the same calls on device pointers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace finemoe {

enum class Group { world, ep, dp };

class Comm {
 public:
  // MPI_Init / MPI_Finalize (thread level FUNNELED). Safe to call init twice.
  static void init(int* argc, char*** argv);
  static void finalize();
  static bool initialized();
  // Abort every rank with `code` (used after printing an error once).
  [[noreturn]] static void abort_all(int code);

  // Builds the grid on MPI_COMM_WORLD; throws ConfigError if EP does not
  // divide the world size.
  explicit Comm(int expert_parallel = 1);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int ep_rank() const { return ep_rank_; }
  int ep_size() const { return ep_size_; }
  int dp_rank() const { return dp_rank_; }
  int dp_size() const { return dp_size_; }
  int group_size(Group g) const;
  // Ranks of this launch on this node (shared memory), for memory checks.
  // Collective over the world: every rank must call it at the same point.
  int ranks_on_this_node() const;
  int group_rank(Group g) const;

  // Largest element count one MPI call is given (default INT_MAX). Tests
  // lower it to exercise the piecewise paths on small buffers; n <= 0 restores
  // the default. Process-wide.
  static void set_max_count(int64_t n);
  static int64_t max_count();

  // In-place deterministic sum over the group.
  void allreduce_sum(float* buf, int64_t n, Group g) const;
  double allreduce_sum(double x, Group g) const;
  double allreduce_max(double x, Group g) const;
  void allreduce_sum(int64_t* buf, int64_t n, Group g) const;
  // True on every rank if `flag` is true on any rank (world).
  bool any(bool flag) const;
  void barrier() const;
  void broadcast(std::string& s, int root = 0) const;  // world
  void broadcast(std::vector<char>& bytes, int root = 0) const;
  // Every rank's value, in rank order, on every rank (world). The fixed-size
  // form needs the same `mine.size()` on every rank; the string form takes
  // any length (lengths are exchanged first), so it cannot truncate.
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& mine) const;
  std::vector<std::string> allgather(const std::string& mine) const;

  // Variable all-to-all inside a group. Counts are in elements, one per group
  // rank; displacements are the prefix sums (packed buffers).
  void alltoallv(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                 const std::vector<int64_t>& recv_counts, Group g) const;
  // Exchange one int64 per destination rank: recv[j] = what rank j sent to me.
  void alltoall(const std::vector<int64_t>& send, std::vector<int64_t>& recv, Group g) const;

  // The MPI communicator as an opaque handle (MPI_Comm) for io code that
  // needs it (parallel HDF5). Cast with `*static_cast<const MPI_Comm*>(...)`.
  const void* native(Group g) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1, ep_rank_ = 0, ep_size_ = 1, dp_rank_ = 0, dp_size_ = 1;
};

}  // namespace finemoe
