// Runs under mpirun -n 1/2/4: deterministic collectives equal serial sums.
#include <gtest/gtest.h>
#include <mpi.h>

#include "finemoe/collective.hpp"
#include "finemoe/comm.hpp"
#include "finemoe/error.hpp"

using namespace finemoe;

static float contribution(int rank, int64_t i) { return float((rank + 1) * 0.1 + double(i % 17) * 1e-3); }

TEST(Comm, GridLayout) {
  Comm c(1);
  EXPECT_EQ(c.ep_size() * c.dp_size(), c.size());
  if (c.size() % 2 == 0) {
    Comm g(2);
    EXPECT_EQ(g.ep_rank(), g.rank() % 2);
    EXPECT_EQ(g.dp_rank(), g.rank() / 2);
    EXPECT_EQ(g.group_size(Group::dp), g.size() / 2);
  }
  if (c.size() > 1) {
    EXPECT_THROW(Comm(c.size() + 1), ConfigError);
  }
}

TEST(Comm, AllreduceEqualsSerialSumInRankOrder) {
  Comm c(1);
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000), int64_t(12345)}) {
    std::vector<float> buf(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = contribution(c.rank(), i);
    c.allreduce_sum(buf.data(), n, Group::world);
    for (int64_t i = 0; i < n; ++i) {
      float ref = 0;
      for (int r = 0; r < c.size(); ++r) ref += contribution(r, i);
      ASSERT_EQ(buf[size_t(i)], ref) << "n=" << n << " i=" << i;  // bit-identical: same order
    }
  }
  EXPECT_DOUBLE_EQ(c.allreduce_sum(1.5, Group::world), 1.5 * c.size());
  EXPECT_TRUE(c.any(c.rank() == c.size() - 1));
  EXPECT_FALSE(c.any(false));
}

TEST(Comm, AlltoallvMovesRows) {
  Comm c(1);
  const int P = c.size();
  std::vector<int64_t> sc(P), rc;
  std::vector<float> send;
  for (int j = 0; j < P; ++j) {
    sc[j] = j + 1;  // send j+1 values to rank j
    for (int k = 0; k <= j; ++k) send.push_back(float(c.rank() * 100 + j));
  }
  std::vector<int64_t> counts_recv;
  c.alltoall(sc, counts_recv, Group::world);
  for (int j = 0; j < P; ++j) EXPECT_EQ(counts_recv[j], c.rank() + 1);
  std::vector<float> recv(static_cast<size_t>(P * (c.rank() + 1)));
  c.alltoallv(send.data(), sc, recv.data(), counts_recv, Group::world);
  for (int j = 0; j < P; ++j)
    for (int k = 0; k <= c.rank(); ++k) EXPECT_EQ(recv[size_t(j * (c.rank() + 1) + k)], float(j * 100 + c.rank()));
}

// Only the last rank fails (as when one rank cannot open its shard): every
// rank must get the same CollectiveError, with that rank's message and exit
// code, instead of the others hanging in their next collective.
TEST(Comm, OneRankFailingFailsEveryRankWithItsMessage) {
  Comm c(1);
  const int bad = c.size() - 1;
  try {
    run_collectively(c, [&] {
      if (c.rank() == bad) throw DataError("shard /data/train_007.bin: truncated (rank " + std::to_string(bad) + ")");
    });
    FAIL() << "rank " << c.rank() << " did not learn of rank " << bad << "'s failure";
  } catch (const CollectiveError& e) {
    EXPECT_EQ(std::string(e.what()), "shard /data/train_007.bin: truncated (rank " + std::to_string(bad) + ")");
    EXPECT_EQ(e.exit_code(), kExitDataError);
  }
  // Two ranks failing differently: the lowest rank's message wins everywhere.
  try {
    run_collectively(c, [&] {
      if (c.rank() >= bad - 1) throw ConfigError("rank " + std::to_string(c.rank()));
    });
    FAIL();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(std::string(e.what()), "rank " + std::to_string(std::max(0, bad - 1)));
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
  EXPECT_NO_THROW(run_collectively(c, [] {}));
}

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one report, from rank 0
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int all = 0;
  MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  Comm::finalize();
  return all;
}
