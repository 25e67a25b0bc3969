// Crash-safety helper (driven by test_crash.cpp, one MPI process):
//   io_ckpt_writer write DIR   resumes from LATEST if there is one (checking
//                              it), then saves checkpoints step+1, step+2, ...
//                              forever, until killed;
//   io_ckpt_writer check DIR   loads the checkpoint LATEST names and EVERY
//                              other step_N.h5 in DIR, checks every value
//                              against the step it claims, prints
//                              "LATEST_STEP FILES_CHECKED" and exits 0; exit 3
//                              naming the file on the first failure.
// Values depend on the step, so a checkpoint mixing two steps is caught.
#include <cstdio>
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
    if (argc != 3) throw Error("usage: io_ckpt_writer write|check DIR");
    const std::string mode = argv[1], dir = argv[2];
    MpiComm comm(1);
    Config cfg;
    cfg.train.checkpoint_keep = 2;
    cfg.train.steps = int64_t(1) << 40;  // load_checkpoint checks step <= train.steps
    const int64_t tokens_per_step = cfg.train.batch_size * cfg.model.seq_len;
    ParamStore store = iotest::make_store(1, 0, 1 << 19);  // ~6 MiB per checkpoint
    auto load_and_check = [&](const std::string& path) {
      const TrainState st = load_checkpoint(path, store, cfg, comm);
      if (iotest::mismatches(store, st.step) != 0)
        throw DataError(path + ": values do not match step " + std::to_string(st.step));
      return st.step;
    };
    CheckpointOwnership owned;
    int64_t step = 0;
    const std::string latest = latest_checkpoint(dir);
    if (!latest.empty()) step = owned.history_up_to = load_and_check(latest);
    if (mode == "check") {
      if (latest.empty()) throw Error("no LATEST in " + dir);
      int files = 0;
      for (const auto& [s, path] : checkpoint_files(dir)) {
        if (load_and_check(path) != s) throw DataError(path + ": stored step differs from its name");
        ++files;
      }
      std::printf("%lld %d\n", (long long)step, files);
    } else {
      for (;;) {
        ++step;
        iotest::fill(store, step);
        save_checkpoint(dir, store, {step, step * tokens_per_step, cfg.train.seed}, cfg, comm, owned);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 3;
  }
  Comm::finalize();
  return rc;
}
