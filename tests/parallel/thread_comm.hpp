// A test-only implementation of the Comm interface: a world of P ranks that
// are threads of one process, exchanging through shared memory, with no MPI.
// Code written against `const Comm&` (the dispatcher, run_collectively, …)
// must work over it unchanged; a caller that went around the interface to
// MPI would not: native() throws, and MPI_COMM_WORLD holds other ranks.
//
// Each group instance (the world, every EP group, every DP group) has a
// barrier and one pointer slot per member. A collective posts a pointer to
// this rank's data, waits for the group, reads its peers' data into this
// rank's scratch or output, and waits again so that no rank leaves (and
// frees or overwrites its data) while another still reads it. Sums run in
// rank order from zero, as MpiComm's do, so results are bit-identical.
//
// Every call is counted per rank in `calls` ("alltoallv/ep", "any/world", …).
#pragma once
#include <algorithm>
#include <barrier>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "finemoe/comm.hpp"
#include "finemoe/error.hpp"

namespace seamtest {

using finemoe::Comm;
using finemoe::Device;
using finemoe::Group;

// What the ranks of one world share.
struct ThreadWorld {
  struct Slot {  // one group instance
    explicit Slot(int n) : ptrs(size_t(n)), bar(n) {}
    std::vector<const void*> ptrs;  // by group rank
    std::barrier<> bar;
  };
  ThreadWorld(int P, int ep) : P(P), ep(ep), world(std::make_unique<Slot>(P)) {
    for (int d = 0; d < P / ep; ++d) eps.push_back(std::make_unique<Slot>(ep));
    for (int e = 0; e < ep; ++e) dps.push_back(std::make_unique<Slot>(P / ep));
  }
  int P, ep;
  std::unique_ptr<Slot> world;
  std::vector<std::unique_ptr<Slot>> eps;  // by dp_rank
  std::vector<std::unique_ptr<Slot>> dps;  // by ep_rank
};

inline const char* group_name(Group g) { return g == Group::world ? "world" : g == Group::ep ? "ep" : "dp"; }

class ThreadComm final : public Comm {
 public:
  ThreadComm(ThreadWorld& w, int rank) : w_(w) { set_grid(rank, w.P, w.ep); }

  Device memory() const override { return Device::cpu; }
  int ranks_on_this_node() const override {
    count("ranks_on_this_node", Group::world);
    barrier_of(Group::world);
    return size();
  }

  void allreduce_sum(float* buf, int64_t n, Group g) const override {
    count("allreduce_sum(float)", g);
    sum_in_rank_order(buf, n, g, fscratch_);
  }
  void allreduce_sum(int64_t* buf, int64_t n, Group g) const override {
    count("allreduce_sum(int64)", g);
    sum_in_rank_order(buf, n, g, iscratch_);
  }
  double allreduce_sum(double x, Group g) const override {
    count("allreduce_sum(double)", g);
    double s = 0;
    exchange(g, &x, [&](const std::vector<const void*>& p) {
      for (const void* v : p) s += *static_cast<const double*>(v);
    });
    return s;
  }
  double allreduce_max(double x, Group g) const override {
    count("allreduce_max", g);
    double m = x;
    exchange(g, &x, [&](const std::vector<const void*>& p) {
      for (const void* v : p) m = std::max(m, *static_cast<const double*>(v));
    });
    return m;
  }
  bool any(bool flag) const override {
    count("any", Group::world);
    bool out = false;
    exchange(Group::world, &flag, [&](const std::vector<const void*>& p) {
      for (const void* v : p) out = out || *static_cast<const bool*>(v);
    });
    return out;
  }
  void barrier() const override {
    count("barrier", Group::world);
    barrier_of(Group::world);
  }
  using Comm::broadcast;
  void broadcast(std::vector<char>& bytes, int root = 0) const override {
    count("broadcast", Group::world);
    exchange(Group::world, &bytes, [&](const std::vector<const void*>& p) {
      if (rank() != root) bytes_ = *static_cast<const std::vector<char>*>(p[size_t(root)]);
    });
    if (rank() != root) bytes.assign(bytes_.begin(), bytes_.end());
  }
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& mine) const override {
    count("allgather(uint64)", Group::world);
    std::vector<uint64_t> all;
    exchange(Group::world, &mine, [&](const std::vector<const void*>& p) {
      for (const void* v : p) {
        const auto& theirs = *static_cast<const std::vector<uint64_t>*>(v);
        if (theirs.size() != mine.size()) error_ = "allgather: sizes differ between ranks";
        all.insert(all.end(), theirs.begin(), theirs.end());
      }
    });
    raise_error();
    return all;
  }
  std::vector<std::string> allgather(const std::string& mine) const override {
    count("allgather(string)", Group::world);
    std::vector<std::string> all;
    exchange(Group::world, &mine, [&](const std::vector<const void*>& p) {
      for (const void* v : p) all.push_back(*static_cast<const std::string*>(v));
    });
    return all;
  }
  void alltoallv(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                 const std::vector<int64_t>& recv_counts, Group g) const override {
    count("alltoallv", g);
    const int P = group_size(g), me = group_rank(g);
    if (int(send_counts.size()) < P || int(recv_counts.size()) < P) throw finemoe::Error("alltoallv: counts");
    struct Post {
      const float* send;
      const std::vector<int64_t>* counts;
    } mine{send, &send_counts};
    exchange(g, &mine, [&](const std::vector<const void*>& p) {
      int64_t ro = 0;
      for (int j = 0; j < P; ++j) {
        const Post& theirs = *static_cast<const Post*>(p[size_t(j)]);
        int64_t off = 0;  // my block in rank j's packed send buffer
        for (int q = 0; q < me; ++q) off += (*theirs.counts)[size_t(q)];
        const int64_t n = (*theirs.counts)[size_t(me)];
        if (n != recv_counts[size_t(j)]) error_ = "alltoallv: rank " + std::to_string(j) + " sends " +
                                                  std::to_string(n) + ", expected " +
                                                  std::to_string(recv_counts[size_t(j)]);
        else if (n) std::memcpy(recv + ro, theirs.send + off, size_t(n) * sizeof(float));
        ro += recv_counts[size_t(j)];
      }
    });
    raise_error();
  }
  void alltoall(const std::vector<int64_t>& send, std::vector<int64_t>& recv, Group g) const override {
    count("alltoall", g);
    const int P = group_size(g), me = group_rank(g);
    const size_t B = send.size() / size_t(P);
    if (B < 1 || B * size_t(P) != send.size()) throw finemoe::Error("alltoall: not P blocks");
    recv.resize(send.size());
    exchange(g, &send, [&](const std::vector<const void*>& p) {
      for (int j = 0; j < P; ++j) {
        const auto& theirs = *static_cast<const std::vector<int64_t>*>(p[size_t(j)]);
        if (theirs.size() != send.size())
          error_ = "alltoall: block sizes differ between ranks";
        else
          std::copy_n(theirs.begin() + std::ptrdiff_t(size_t(me) * B), B, recv.begin() + std::ptrdiff_t(size_t(j) * B));
      }
    });
    raise_error();
  }
  const void* native(Group g) const override {
    count("native", g);
    throw finemoe::Error("ThreadComm has no MPI communicator");
  }

  // Calls made through this rank's interface: "name/group" -> count.
  mutable std::map<std::string, int> calls;

 private:
  ThreadWorld::Slot& slot(Group g) const {
    if (g == Group::world) return *w_.world;
    if (g == Group::ep) return *w_.eps[size_t(dp_rank())];
    return *w_.dps[size_t(ep_rank())];
  }
  template <class Read>
  void exchange(Group g, const void* mine, Read&& read) const {
    ThreadWorld::Slot& s = slot(g);
    s.ptrs[size_t(group_rank(g))] = mine;
    s.bar.arrive_and_wait();
    read(s.ptrs);
    s.bar.arrive_and_wait();
  }
  void barrier_of(Group g) const { exchange(g, nullptr, [](const std::vector<const void*>&) {}); }
  template <class T>
  void sum_in_rank_order(T* buf, int64_t n, Group g, std::vector<T>& scratch) const {
    scratch.resize(size_t(std::max<int64_t>(n, 0)));  // grow-only capacity
    exchange(g, buf, [&](const std::vector<const void*>& p) {
      for (int64_t i = 0; i < n; ++i) {
        T s = 0;
        for (const void* v : p) s += static_cast<const T*>(v)[i];
        scratch[size_t(i)] = s;
      }
    });
    std::copy_n(scratch.begin(), n, buf);  // after the second wait: nobody reads buf any more
  }
  void count(const char* what, Group g) const { ++calls[std::string(what) + "/" + group_name(g)]; }
  // A mismatch found while reading is thrown only after the group has left
  // the exchange, so the other ranks are not left waiting.
  void raise_error() const {
    if (error_.empty()) return;
    const std::string e = error_;
    error_.clear();
    throw finemoe::Error("ThreadComm::" + e);
  }

  ThreadWorld& w_;
  mutable std::vector<float> fscratch_;
  mutable std::vector<int64_t> iscratch_;
  mutable std::vector<char> bytes_;
  mutable std::string error_;
};

// Runs body(comm) on P threads, one ThreadComm of a P-rank world with EP = ep
// each, and waits for them all. The first exception of any rank is rethrown.
inline void run_ranks(int P, int ep, const std::function<void(ThreadComm&)>& body) {
  ThreadWorld w(P, ep);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(P));
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r)
    threads.emplace_back([&, r] {
      try {
        ThreadComm c(w, r);
        body(c);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace seamtest
