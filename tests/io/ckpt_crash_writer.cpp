// Crash-safety helper (driven by test_crash.cpp, one MPI process):
//   io_ckpt_writer write DIR   resumes from LATEST if there is one (checking
//                              it), then saves checkpoints step+1, step+2, ...
//                              forever, until killed;
//   io_ckpt_writer check DIR   loads the checkpoint LATEST names and checks
//                              every value against the step it claims.
// Values depend on the step, so a checkpoint mixing two steps is caught.
#include <cstdio>
#include <string>

#include "finemoe/checkpoint.hpp"
#include "finemoe/comm.hpp"
#include "finemoe/error.hpp"
#include "io_test_util.hpp"

using namespace finemoe;

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  int rc = 0;
  try {
    if (argc != 3) throw Error("usage: io_ckpt_writer write|check DIR");
    const std::string mode = argv[1], dir = argv[2];
    Comm comm(1);
    Config cfg;
    cfg.train.checkpoint_keep = 2;
    ParamStore store = iotest::make_store(1, 0, 1 << 19);  // ~6 MiB per checkpoint
    int64_t step = 0;
    const std::string latest = latest_checkpoint(dir);
    if (!latest.empty()) {
      step = load_checkpoint(latest, store, cfg, comm).step;
      if (iotest::mismatches(store, step) != 0) throw Error(latest + ": values do not match step " + std::to_string(step));
    }
    if (mode == "check") {
      if (latest.empty()) throw Error("no LATEST in " + dir);
      std::printf("%lld\n", (long long)step);
    } else {
      for (;;) {
        ++step;
        iotest::fill(store, step);
        save_checkpoint(dir, store, {step, step * 100, 1}, cfg, comm);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 3;
  }
  Comm::finalize();
  return rc;
}
