// The host MPI implementation of Comm (comm.hpp has the contract): MPI
// communicators for the world and the EP and DP groups, buffers in host
// memory, 64-bit counts moved in pieces of at most Comm::max_count()
// elements. MPI stays out of this header (the communicators are behind Impl).
//
// Code that communicates takes `const Comm&`; only the code that builds the
// communicator names MpiComm or calls make_mpi_comm.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "finemoe/comm.hpp"

namespace finemoe {

class MpiComm final : public Comm {
 public:
  // Builds the grid on MPI_COMM_WORLD (Comm::init first); throws ConfigError
  // if EP does not divide the world size.
  explicit MpiComm(int expert_parallel = 1);
  ~MpiComm() override;

  Device memory() const override { return Device::cpu; }
  int ranks_on_this_node() const override;

  void allreduce_sum(float* buf, int64_t n, Group g) const override;
  double allreduce_sum(double x, Group g) const override;
  double allreduce_max(double x, Group g) const override;
  void allreduce_sum(int64_t* buf, int64_t n, Group g) const override;
  bool any(bool flag) const override;
  void barrier() const override;
  using Comm::broadcast;  // the string form
  void broadcast(std::vector<char>& bytes, int root = 0) const override;
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& mine) const override;
  std::vector<std::string> allgather(const std::string& mine) const override;
  void alltoallv(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                 const std::vector<int64_t>& recv_counts, Group g) const override;
  void alltoall(const std::vector<int64_t>& send, std::vector<int64_t>& recv, Group g) const override;
  const void* native(Group g) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The communicator of this launch as the interface: an MpiComm today.
std::unique_ptr<Comm> make_mpi_comm(int expert_parallel = 1);

}  // namespace finemoe
