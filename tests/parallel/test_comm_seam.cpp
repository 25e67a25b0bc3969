// The Comm seam (comm.hpp): code written against `const Comm&` runs over any
// implementation. The same checks run over MpiComm (the process's MPI ranks,
// mpirun -n 1 and 2) and over ThreadComm (thread_comm.hpp: ranks that are
// threads of this process, no MPI), and the all-to-all dispatcher and
// run_collectively, given a ThreadComm, move and agree exactly as over MPI
// while every exchange is counted on the ThreadComm: none goes around it.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <utility>
#include <vector>

#include "finemoe/collective.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/device.hpp"
#include "finemoe/dispatcher_mpi.hpp"
#include "finemoe/error.hpp"
#include "thread_comm.hpp"

using namespace finemoe;
using seamtest::run_ranks;
using seamtest::ThreadComm;

namespace {

float contribution(int rank, int64_t i) { return float((rank + 1) * 0.1 + double(i % 17) * 1e-3); }

// World ranks of the members of `g` around `c`'s rank, in group-rank order.
std::vector<int> members(const Comm& c, Group g) {
  std::vector<int> m;
  for (int q = 0; q < c.group_size(g); ++q)
    m.push_back(g == Group::world ? q : g == Group::ep ? c.dp_rank() * c.ep_size() + q : c.ep_rank() + q * c.ep_size());
  return m;
}

// What one rank checks, through the interface only. Every rank makes the
// same collective calls in the same order, and no check returns early (no
// ASSERT), so a failure on one rank cannot leave the others waiting.
void check_collectives(const Comm& c) {
  const int P = c.size();
  EXPECT_EQ(c.memory(), Device::cpu);
  EXPECT_EQ(c.ep_size() * c.dp_size(), P);
  EXPECT_EQ(c.ep_rank(), c.rank() % c.ep_size());
  EXPECT_EQ(c.dp_rank(), c.rank() / c.ep_size());

  // Float sums over each group equal, bit for bit, the serial sum in rank order.
  for (Group g : {Group::world, Group::ep, Group::dp}) {
    const int64_t n = 1001;
    std::vector<float> buf(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = contribution(c.rank(), i);
    c.allreduce_sum(buf.data(), n, g);
    const std::vector<int> m = members(c, g);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float ref = 0;
      for (int r : m) ref += contribution(r, i);
      if (buf[size_t(i)] != ref && bad++ == 0)
        ADD_FAILURE() << "group " << seamtest::group_name(g) << " i=" << i << ": " << buf[size_t(i)] << " != " << ref;
    }
    EXPECT_EQ(bad, 0);
  }
  std::vector<int64_t> ints{int64_t(c.rank()), 1, -int64_t(c.rank()) * 1000000007LL};
  c.allreduce_sum(ints.data(), int64_t(ints.size()), Group::world);
  EXPECT_EQ(ints[0], int64_t(P) * (P - 1) / 2);
  EXPECT_EQ(ints[1], P);
  EXPECT_EQ(ints[2], -int64_t(P) * (P - 1) / 2 * 1000000007LL);
  EXPECT_DOUBLE_EQ(c.allreduce_sum(0.25 * (c.rank() + 1), Group::world), 0.25 * P * (P + 1) / 2);
  EXPECT_EQ(c.allreduce_max(double(c.ep_rank()), Group::ep), double(c.ep_size() - 1));
  EXPECT_EQ(c.allreduce_max(double(c.dp_rank()), Group::dp), double(c.dp_size() - 1));
  EXPECT_TRUE(c.any(c.rank() == P - 1));
  EXPECT_FALSE(c.any(false));
  c.barrier();

  // alltoallv in the EP group: group rank q sends j+q+1 values to rank j.
  const int E = c.ep_size(), me = c.ep_rank();
  std::vector<int64_t> sc(static_cast<size_t>(E)), rc(static_cast<size_t>(E));
  std::vector<float> send;
  for (int j = 0; j < E; ++j) {
    sc[size_t(j)] = j + me + 1;
    rc[size_t(j)] = me + j + 1;
    for (int k = 0; k < sc[size_t(j)]; ++k) send.push_back(float(c.rank() * 1000 + j * 100 + k));
  }
  int64_t total = 0;
  for (int64_t n : rc) total += n;
  std::vector<float> recv(size_t(total), -1.0f);
  c.alltoallv(send.data(), sc, recv.data(), rc, Group::ep);
  const std::vector<int> ep_members = members(c, Group::ep);
  std::vector<float> want;
  for (int j = 0; j < E; ++j)
    for (int k = 0; k < rc[size_t(j)]; ++k) want.push_back(float(ep_members[size_t(j)] * 1000 + me * 100 + k));
  EXPECT_EQ(recv, want);

  // alltoall of blocks of 3 over the world: block j of rank r is {r, j, r·j}.
  std::vector<int64_t> blocks, got;
  for (int j = 0; j < P; ++j) blocks.insert(blocks.end(), {c.rank(), j, int64_t(c.rank()) * j});
  c.alltoall(blocks, got, Group::world);
  std::vector<int64_t> want_blocks;
  for (int j = 0; j < P; ++j) want_blocks.insert(want_blocks.end(), {j, c.rank(), int64_t(j) * c.rank()});
  EXPECT_EQ(got, want_blocks);

  std::string s = c.rank() == P - 1 ? "from the last rank" : "";
  c.broadcast(s, P - 1);
  EXPECT_EQ(s, "from the last rank");
  const auto fixed = c.allgather(std::vector<uint64_t>{uint64_t(c.rank()) * 7});
  const auto texts = c.allgather(std::string(size_t(c.rank()), 'x'));
  std::vector<uint64_t> want_fixed;
  std::vector<std::string> want_texts;
  for (int r = 0; r < P; ++r) {
    want_fixed.push_back(uint64_t(r) * 7);
    want_texts.emplace_back(size_t(r), 'x');
  }
  EXPECT_EQ(fixed, want_fixed);
  EXPECT_EQ(texts, want_texts);
  const int node = c.ranks_on_this_node();
  EXPECT_GE(node, 1);
  EXPECT_LE(node, P);
}

// The value of column c of row i that rank `src` (EP rank) sends to global
// expert e.
float row_value(int src, int64_t e, int64_t i, int64_t col) { return float(src * 10000 + e * 100 + i * 10 + col); }
int64_t rows_for(int src, int64_t e) { return (src + 2 * e) % 3; }  // 0, 1 or 2 rows

// One dispatch + combine through make_dispatcher(c) with K = 2 experts per EP
// rank and rows of width 3: the experts receive, for each local expert, the
// rows of source 0, 1, … in the sender's order, and combine returns the
// experts' rows (here: the received rows times 2) to the send layout.
void check_dispatcher(const Comm& c) {
  const int P = c.ep_size(), me = c.ep_rank();
  const int64_t K = 2, EG = P * K, width = 3;
  std::vector<int64_t> send_counts(static_cast<size_t>(EG));
  std::vector<float> send;
  for (int64_t e = 0; e < EG; ++e) {
    send_counts[size_t(e)] = rows_for(me, e);
    for (int64_t i = 0; i < send_counts[size_t(e)]; ++i)
      for (int64_t col = 0; col < width; ++col) send.push_back(row_value(me, e, i, col));
  }
  std::unique_ptr<Dispatcher> disp = make_dispatcher(c);
  ASSERT_NE(dynamic_cast<AllToAllDispatcher*>(disp.get()), nullptr);  // the same on every rank

  DeviceBuffer<float> recv{cpu_backend()};  // make_dispatcher's default backend; its memory is the host's
  std::vector<int64_t> recv_counts;
  disp->dispatch(send.data(), send_counts, width, recv, recv_counts);
  std::vector<float> doubled(recv.data(), recv.data() + recv.size());
  for (float& v : doubled) v *= 2;
  std::vector<float> back(send.size(), -1.0f);
  disp->combine(doubled.data(), width, back.data());
  // The exchanges are done: from here on a failed ASSERT only ends this rank's checks.

  ASSERT_EQ(recv_counts.size(), size_t(K));
  int64_t row = 0;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t e = me * K + k;
    int64_t n = 0;
    for (int src = 0; src < P; ++src)
      for (int64_t i = 0; i < rows_for(src, e); ++i, ++row, ++n)
        for (int64_t col = 0; col < width; ++col)
          ASSERT_EQ(recv.data()[row * width + col], row_value(src, e, i, col))
              << "expert " << e << " source " << src << " row " << i;
    EXPECT_EQ(recv_counts[size_t(k)], n);
  }
  for (size_t i = 0; i < send.size(); ++i) ASSERT_EQ(back[i], 2 * send[i]) << i;
  // Bytes sent off-rank: the K counts to each peer, the rows there and back.
  int64_t off_rank_out = 0, off_rank_in = 0;
  for (int p = 0; p < P; ++p)
    for (int64_t k = 0; k < K; ++k)
      if (p != me) {
        off_rank_out += rows_for(me, p * K + k);
        off_rank_in += rows_for(p, me * K + k);
      }
  EXPECT_EQ(disp->last_bytes_sent(), (P - 1) * K * int64_t(sizeof(int64_t)) +
                                         (off_rank_out + off_rank_in) * width * int64_t(sizeof(float)));
}

using Grid = std::pair<int, int>;  // world size, EP

TEST(CommSeam, CollectivesOverMpiComm) {
  MpiComm world(1);
  check_collectives(world);
  MpiComm ep(world.size());
  check_collectives(ep);
}

TEST(CommSeam, SameCollectivesOverThreadComm) {
  for (const auto& [P, ep] : std::vector<Grid>{{1, 1}, {2, 1}, {2, 2}, {3, 3}, {4, 2}, {6, 3}, {6, 2}}) {
    SCOPED_TRACE("P=" + std::to_string(P) + " EP=" + std::to_string(ep));
    run_ranks(P, ep, [](ThreadComm& c) {
      check_collectives(c);
      // Each collective was one call on this rank's interface.
      EXPECT_EQ(c.calls.at("allreduce_sum(float)/ep"), 1);
      EXPECT_EQ(c.calls.at("alltoallv/ep"), 1);
      EXPECT_EQ(c.calls.at("alltoall/world"), 1);
      EXPECT_EQ(c.calls.at("broadcast/world"), 1);
    });
  }
}

TEST(CommSeam, DispatcherOverMpiComm) {
  MpiComm world(1);
  MpiComm comm(world.size());  // EP = world
  if (comm.ep_size() < 2) GTEST_SKIP() << "needs 2 ranks (EP = 1 takes the local dispatcher)";
  check_dispatcher(comm);
}

// The dispatcher only ever talks to the Comm it was given: over a ThreadComm
// it exchanges the counts with one alltoall and the rows with one alltoallv
// each way, all in the EP group, and never asks for the MPI communicator.
TEST(CommSeam, DispatcherGoesThroughTheComm) {
  for (const auto& [P, ep] : std::vector<Grid>{{2, 2}, {3, 3}, {4, 4}, {4, 2}}) {
    SCOPED_TRACE("P=" + std::to_string(P) + " EP=" + std::to_string(ep));
    run_ranks(P, ep, [](ThreadComm& c) {
      check_dispatcher(c);
      const std::map<std::string, int> want{{"alltoall/ep", 1}, {"alltoallv/ep", 2}};
      EXPECT_EQ(c.calls, want);
    });
  }
}

// run_collectively (collective.hpp) over a ThreadComm: one rank fails, every
// rank throws its CollectiveError, after one `any` and one broadcast per rank.
TEST(CommSeam, RunCollectivelyOverThreadComm) {
  run_ranks(3, 1, [](ThreadComm& c) {
    try {
      run_collectively(c, [&] {
        if (c.rank() == 1) throw DataError("shard 1: truncated");
      });
      ADD_FAILURE() << "rank " << c.rank() << " did not learn of rank 1's failure";
    } catch (const CollectiveError& e) {
      EXPECT_EQ(std::string(e.what()), "shard 1: truncated");
      EXPECT_EQ(e.exit_code(), kExitDataError);
    }
    EXPECT_NO_THROW(run_collectively(c, [] {}));
    const std::map<std::string, int> want{{"any/world", 2}, {"broadcast/world", 3}};
    EXPECT_EQ(c.calls, want);
  });
}

}  // namespace

#include "../mpi_gtest_main.hpp"  // main(): every rank runs the tests, rank 0 reports
