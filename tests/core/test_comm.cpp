// Runs under mpirun -n 1/2/4: deterministic collectives equal serial sums.
#include <gtest/gtest.h>
#include <mpi.h>

#include "finemoe/agreement.hpp"
#include "finemoe/collective.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/error.hpp"

using namespace finemoe;

static float contribution(int rank, int64_t i) { return float((rank + 1) * 0.1 + double(i % 17) * 1e-3); }

// allreduce_sum of n contributions equals, bit for bit, the serial sum in
// rank order (the reduction's defined order).
static void expect_rank_order_sum(const Comm& c, int64_t n) {
  std::vector<float> buf(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = contribution(c.rank(), i);
  c.allreduce_sum(buf.data(), n, Group::world);
  for (int64_t i = 0; i < n; ++i) {
    float ref = 0;
    for (int r = 0; r < c.size(); ++r) ref += contribution(r, i);
    ASSERT_EQ(buf[size_t(i)], ref) << "n=" << n << " i=" << i;
  }
}

TEST(Comm, GridLayout) {
  MpiComm c(1);
  EXPECT_EQ(c.ep_size() * c.dp_size(), c.size());
  if (c.size() % 2 == 0) {
    MpiComm g(2);
    EXPECT_EQ(g.ep_rank(), g.rank() % 2);
    EXPECT_EQ(g.dp_rank(), g.rank() / 2);
    EXPECT_EQ(g.group_size(Group::dp), g.size() / 2);
  }
  if (c.size() > 1) {
    EXPECT_THROW(MpiComm(c.size() + 1), ConfigError);
  }
}

TEST(Comm, AllreduceEqualsSerialSumInRankOrder) {
  MpiComm c(1);
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000), int64_t(12345)}) expect_rank_order_sum(c, n);
  EXPECT_DOUBLE_EQ(c.allreduce_sum(1.5, Group::world), 1.5 * c.size());
  EXPECT_TRUE(c.any(c.rank() == c.size() - 1));
  EXPECT_FALSE(c.any(false));
}

TEST(Comm, AlltoallvMovesRows) {
  MpiComm c(1);
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

// MPI counts are int; Comm splits longer buffers into pieces of at most
// max_count() elements. Lowering the limit to 7 runs the piecewise paths on
// small buffers: the allreduce must give the same bits as the serial
// rank-order sum (each element is still summed in rank order), the
// all-to-all (point-to-point pieces when a rank's total exceeds the limit)
// the same rows, the int64 sum and the broadcast the same values.
TEST(Comm, PiecewiseCollectivesBelowTheCountLimitGiveTheSameResults) {
  MpiComm c(1);
  struct Restore {
    ~Restore() { Comm::set_max_count(0); }
  } restore;
  Comm::set_max_count(7);
  ASSERT_EQ(Comm::max_count(), 7);
  for (int64_t n : {int64_t(3), int64_t(7), int64_t(8), int64_t(1000)}) expect_rank_order_sum(c, n);
  std::vector<int64_t> ints(20);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = int64_t(i) * (c.rank() + 1);
  c.allreduce_sum(ints.data(), int64_t(ints.size()), Group::world);
  const int64_t ranksum = int64_t(c.size()) * (c.size() + 1) / 2;
  for (size_t i = 0; i < ints.size(); ++i) ASSERT_EQ(ints[i], int64_t(i) * ranksum);

  // Rank r sends 5·(j+1) values to rank j: up to 20 per peer, 50 in all at 4 ranks.
  const int P = c.size();
  std::vector<int64_t> sc(P), rc(P);
  std::vector<float> send;
  for (int j = 0; j < P; ++j) {
    sc[size_t(j)] = 5 * (j + 1);
    rc[size_t(j)] = 5 * (c.rank() + 1);
    for (int k = 0; k < sc[size_t(j)]; ++k) send.push_back(float(c.rank() * 1000 + j * 100 + k));
  }
  std::vector<float> recv(size_t(P * 5 * (c.rank() + 1)), -1.0f);
  c.alltoallv(send.data(), sc, recv.data(), rc, Group::world);
  for (int j = 0; j < P; ++j)
    for (int k = 0; k < rc[size_t(j)]; ++k)
      ASSERT_EQ(recv[size_t(j * rc[size_t(j)] + k)], float(j * 1000 + c.rank() * 100 + k)) << "from " << j;

  std::string s = c.rank() == 0 ? std::string(50, 'x') + "end" : "";
  c.broadcast(s);
  EXPECT_EQ(s, std::string(50, 'x') + "end");
}

// Only the last rank fails (as when one rank cannot open its shard): every
// rank must get the same CollectiveError, with that rank's message and exit
// code, instead of the others hanging in their next collective.
TEST(Comm, OneRankFailingFailsEveryRankWithItsMessage) {
  MpiComm c(1);
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

TEST(Comm, AllgatherInRankOrder) {
  MpiComm c(1);
  const auto fixed = c.allgather(std::vector<uint64_t>{uint64_t(c.rank()), 100u + uint64_t(c.rank())});
  ASSERT_EQ(fixed.size(), size_t(2 * c.size()));
  for (int r = 0; r < c.size(); ++r) {
    EXPECT_EQ(fixed[size_t(2 * r)], uint64_t(r));
    EXPECT_EQ(fixed[size_t(2 * r + 1)], 100u + uint64_t(r));
  }
  // Strings of different lengths, one empty.
  const auto texts = c.allgather(c.rank() == 1 ? std::string() : std::string(size_t(c.rank() + 3), char('a' + c.rank())));
  ASSERT_EQ(texts.size(), size_t(c.size()));
  for (int r = 0; r < c.size(); ++r)
    EXPECT_EQ(texts[size_t(r)], r == 1 ? std::string() : std::string(size_t(r + 3), char('a' + r)));
  EXPECT_GE(c.ranks_on_this_node(), 1);
  EXPECT_LE(c.ranks_on_this_node(), c.size());
}

TEST(Agreement, RankLists) {
  EXPECT_EQ(format_rank_list({3}), "rank 3");
  EXPECT_EQ(format_rank_list({0, 1, 2, 5, 7, 8}), "ranks 0-2, 5, 7-8");
}

namespace {
StartStatus status(const std::string& steps, const std::string& seed) {
  StartStatus s;
  s.command = "train";
  s.config = {{"train.steps", steps}, {"train.seed", seed}, {"run.dir", "runs/x"}};
  return s;
}
}  // namespace

TEST(Agreement, SameConfigProceedsAndStopIsShared) {
  MpiComm c(1);
  EXPECT_EQ(agree_on_start(c, status("2", "1")), StartVerdict::proceed);
  StartStatus s = status("2", "1");
  s.stop = c.rank() == c.size() - 1;  // a signal reached one rank only
  EXPECT_EQ(agree_on_start(c, s), StartVerdict::stop);
}

TEST(Agreement, DifferingKeysListedWithTheirRanks) {
  MpiComm c(1);
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  // The last rank differs in steps, every odd rank in the seed.
  const int last = c.size() - 1;
  StartStatus s = status(c.rank() == last ? "3" : "2", c.rank() % 2 ? "9" : "1");
  try {
    agree_on_start(c, s);
    FAIL();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(e.exit_code(), kExitUsage);
    const std::string m = e.what();
    EXPECT_NE(m.find("\n  train.steps: '2' on " + (last == 1 ? std::string("rank 0") : "ranks 0-" + std::to_string(last - 1)) +
                     " | '3' on rank " + std::to_string(last)),
              std::string::npos)
        << m;
    const std::string seed = c.size() == 2 ? "train.seed: '1' on rank 0 | '9' on rank 1"
                                           : "train.seed: '1' on ranks 0, 2 | '9' on ranks 1, 3";
    EXPECT_NE(m.find(seed), std::string::npos) << m;
    EXPECT_EQ(m.find("run.dir"), std::string::npos) << m;
  }
}

TEST(Agreement, FailuresReportedOnceWithTheirRanks) {
  MpiComm c(1);
  // Every rank fails alike: just the message.
  StartStatus all = status("2", "1");
  all.code = kExitUsage;
  all.message = "config key 'moe.granularity': bad";
  try {
    agree_on_start(c, all);
    FAIL();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(std::string(e.what()), "config key 'moe.granularity': bad");
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
  if (c.size() < 2) return;
  // Rank 1 cannot read its file, the others are fine (and a stop is pending:
  // failures win). The lowest failing rank's code; its message once.
  StartStatus one = status("2", "1");
  one.stop = true;
  if (c.rank() == 1) {
    one.code = kExitUsage;
    one.message = "--config: cannot open config file 'a.ini'";
  }
  if (c.rank() >= 2) {  // on 4 ranks: 2 and 3 fail alike with another error
    one.code = kExitFailure;
    one.message = "other";
  }
  try {
    agree_on_start(c, one);
    FAIL();
  } catch (const CollectiveError& e) {
    const std::string want = "on rank 1 of " + std::to_string(c.size()) + ": --config: cannot open config file 'a.ini'" +
                             (c.size() == 4 ? "\n  on ranks 2-3 of 4: other" : "");
    EXPECT_EQ(std::string(e.what()), want);
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
}

#include "../mpi_gtest_main.hpp"  // main(): every rank runs the tests, rank 0 reports
