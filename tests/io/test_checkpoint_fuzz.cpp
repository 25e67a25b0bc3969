// Byte-flip fuzz of a checkpoint (one MPI process, in-process loads).
//
// A fixed seed picks a few hundred single-byte changes anywhere in a small
// checkpoint, and separately a few hundred inside the tensors' stored data.
// Each changed file is loaded with load_checkpoint. Allowed outcomes only:
//   - DataError whose message names the file (refused), or
//   - a load whose tensors and state are bit-identical to the original (the
//     byte was unused or padding);
// never a crash, a hang (alarm), another error kind, or a load that yields
// different values. Every change inside tensor data must be refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "ckpt_test_util.hpp"
#include "finemoe/checkpoint.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/error.hpp"
#include "io_test_util.hpp"

using namespace finemoe;

namespace {

struct Tally {
  int refused = 0, identical = 0;
};

// Loads `path`; records the outcome; fails the test on any other outcome.
void load_one(const std::string& path, const Config& cfg, const Comm& comm, int64_t salt, Tally& t,
              const std::string& what) {
  ParamStore b = iotest::make_store(1, 0);
  iotest::fill(b, salt + 1);  // anything but the right values
  try {
    const TrainState st = load_checkpoint(path, b, cfg, comm);
    EXPECT_EQ(st.step, salt) << what;
    EXPECT_EQ(st.tokens, salt * cfg.train.batch_size * cfg.model.seq_len) << what;
    EXPECT_EQ(st.seed, cfg.train.seed) << what;
    EXPECT_EQ(iotest::mismatches(b, salt), 0) << what << ": loaded silently with different values";
    ++t.identical;
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << what << ": " << e.what();
    ++t.refused;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": unexpected error kind: " << e.what();
  }
}

}  // namespace

TEST(CheckpointFuzz, ByteFlipsAreRefusedOrHarmless) {
  ::alarm(240);  // a hang fails the test (SIGALRM) instead of stalling CI
  MpiComm comm(1);
  CheckpointOwnership owned;
  Config cfg;
  const int64_t salt = 9;
  const std::string run = iotest::fresh_dir("ckpt_fuzz");
  ParamStore a = iotest::make_store(1, 0);
  iotest::fill(a, salt);
  const std::string good =
      save_checkpoint(run, a, {salt, salt * cfg.train.batch_size * cfg.model.seq_len, cfg.train.seed}, cfg, comm, owned);
  const std::string bytes = iotest::read_file(good);
  const auto extents = ckpttest::data_extents(good, a);
  ASSERT_FALSE(extents.empty());
  uint64_t data_bytes = 0;
  for (const auto& e : extents) data_bytes += e.size;

  std::mt19937_64 rng(20261203);
  const int kAnywhere = 300, kInData = 200;
  Tally anywhere, in_data;
  for (int i = 0; i < kAnywhere + kInData; ++i) {
    const bool data = i >= kAnywhere;
    uint64_t pos;
    std::string where;
    if (!data) {
      pos = rng() % bytes.size();
    } else {
      uint64_t k = rng() % data_bytes;
      for (const auto& e : extents) {
        if (k < e.size) {
          pos = e.offset + k;
          where = " in " + e.dataset;
          break;
        }
        k -= e.size;
      }
    }
    const unsigned char mask = (unsigned char)(1 + rng() % 255);
    // A new name each time: HDF5 must never see a cached earlier file.
    const std::string path = run + "/fuzz_" + std::to_string(i) + ".h5";
    ckpttest::write_flipped(path, bytes, pos, mask);
    const std::string what = "byte " + std::to_string(pos) + where + " ^ " + std::to_string(mask);
    load_one(path, cfg, comm, salt, data ? in_data : anywhere, what);
    ::unlink(path.c_str());
  }
  std::printf("file %zu bytes (%llu in tensor data): %d flips anywhere -> %d refused, %d harmless (bit-identical "
              "load); %d flips in tensor data -> %d refused\n",
              bytes.size(), (unsigned long long)data_bytes, kAnywhere, anywhere.refused, anywhere.identical, kInData,
              in_data.refused);
  EXPECT_EQ(in_data.refused, kInData) << "a change in tensor data was accepted";
  EXPECT_EQ(anywhere.refused + anywhere.identical, kAnywhere);
  // Tensor data is most of the file, so most random flips must be refused.
  EXPECT_GE(anywhere.refused, kAnywhere / 2);
  ::alarm(0);
}

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  Comm::finalize();
  return rc;
}
