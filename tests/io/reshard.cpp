// Reshard test program, run under mpiexec by several CTest entries that share
// one directory (FIXTURES ordering):
//   io_reshard save DIR EP   every rank fills its part of the store with a
//                            known function of the GLOBAL index and saves;
//                            ranks that must not write (DP replicas > 0 for
//                            expert tensors, ranks > 0 for replicated ones)
//                            hold garbage, so a stray write is caught.
//   io_reshard load DIR EP   loads LATEST with another EP / rank count and
//                            checks every value of every rank's part.
//   io_reshard mismatch DIR EP   loads with a changed shape key: every rank
//                            must get the same ConfigError (nobody hangs).
// Exit 0 on success; prints what it checked.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "finemoe/checkpoint.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/error.hpp"
#include "io_test_util.hpp"

using namespace finemoe;

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  int rc = 0;
  try {
    if (argc != 4) throw Error("usage: io_reshard save|load|mismatch DIR EP");
    const std::string mode = argv[1], dir = argv[2];
    const int ep = std::atoi(argv[3]);
    MpiComm comm(ep);
    Config cfg;
    cfg.train.checkpoint_keep = 2;
    ParamStore store = iotest::make_store(comm.ep_size(), comm.ep_rank());
    const int64_t salt = 11;
    if (mode == "save") {
      iotest::fill(store, salt, /*garbage_replicated=*/comm.rank() != 0, /*garbage_expert=*/comm.dp_rank() != 0);
      CheckpointOwnership owned;
      // tokens = step x batch_size x seq_len and seed = train.seed, as load_checkpoint checks
      std::string path = save_checkpoint(dir, store, {100, 100 * cfg.train.batch_size * cfg.model.seq_len, cfg.train.seed}, cfg, comm, owned);
      if (comm.rank() == 0)
        std::printf("saved %s on %d ranks (EP %d x DP %d)\n", path.c_str(), comm.size(), comm.ep_size(), comm.dp_size());
    } else if (mode == "load") {
      const std::string path = latest_checkpoint(dir);
      if (path.empty()) throw Error("no LATEST in " + dir);
      TrainState st = load_checkpoint(path, store, cfg, comm);
      int64_t bad = iotest::mismatches(store, salt), elems = 0;
      for (const auto& p : store.params()) elems += 3 * p.local_count;
      int64_t all_bad = int64_t(comm.allreduce_sum(double(bad), Group::world));
      double all_elems = comm.allreduce_sum(double(elems), Group::world);
      if (st.step != 100 || st.tokens != 100 * cfg.train.batch_size * cfg.model.seq_len || st.seed != cfg.train.seed) {
        std::fprintf(stderr, "rank %d: wrong state %lld %lld %llu\n", comm.rank(), (long long)st.step,
                     (long long)st.tokens, (unsigned long long)st.seed);
        rc = 1;
      }
      if (all_bad != 0) rc = 1;
      if (comm.rank() == 0)
        std::printf("loaded %s on %d ranks (EP %d x DP %d): %.0f values checked, %lld differ\n", path.c_str(),
                    comm.size(), comm.ep_size(), comm.dp_size(), all_elems, (long long)all_bad);
    } else if (mode == "mismatch") {
      cfg.model.n_blocks = 5;
      try {
        load_checkpoint(latest_checkpoint(dir), store, cfg, comm);
        std::fprintf(stderr, "rank %d: no error for a shape mismatch\n", comm.rank());
        rc = 1;
      } catch (const ConfigError& e) {
        if (std::string(e.what()).find("model.n_blocks: checkpoint 2, current config 5") == std::string::npos) {
          std::fprintf(stderr, "rank %d: unexpected message: %s\n", comm.rank(), e.what());
          rc = 1;
        }
      }
      int bad = comm.any(rc != 0);
      if (comm.rank() == 0 && !bad) std::printf("every rank got the ConfigError naming model.n_blocks\n");
      rc = bad ? 1 : 0;
    } else {
      throw Error("unknown mode " + mode);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 2;
  }
  Comm::finalize();
  return rc;
}
