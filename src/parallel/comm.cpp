// The Comm interface's shared parts: the grid and the string broadcast (the
// MPI launch and the MPI implementation are in comm_mpi.cpp).
#include "finemoe/comm.hpp"

#include "finemoe/error.hpp"

namespace finemoe {

void Comm::set_grid(int rank, int size, int ep) {
  if (ep < 1 || size % ep != 0)
    throw ConfigError("config key 'parallel.expert_parallel': " + std::to_string(ep) +
                      " does not divide the number of ranks " + std::to_string(size));
  rank_ = rank;
  size_ = size;
  ep_size_ = ep;
  dp_size_ = size / ep;
  ep_rank_ = rank % ep;
  dp_rank_ = rank / ep;
}

void Comm::broadcast(std::string& s, int root) const {
  std::vector<char> b(s.begin(), s.end());
  broadcast(b, root);
  s.assign(b.begin(), b.end());
}

}  // namespace finemoe
