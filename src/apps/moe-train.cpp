// moe-train: train a fine-grained MoE (or dense) decoder. See --help.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "finemoe/comm.hpp"
#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/log.hpp"
#include "finemoe/trainer.hpp"

namespace {
const char* kUsage =
    "moe-train: MPI bulk-synchronous trainer for fine-grained Mixture-of-Experts decoders.\n\n"
    "Usage: [mpirun -n P | srun] moe-train [--config FILE.ini] [--section.key value ...]\n\n"
    "Trains the configured model on the synthetic corpus or token shards, writing\n"
    "RUN_DIR/config.ini, RUN_DIR/metrics.h5 and RUN_DIR/checkpoints/. Rerunning the same\n"
    "command resumes from the newest checkpoint (run.resume=auto).\n\n"
    "Exit codes: 0 completed | 1 runtime failure | 2 bad command line or config |\n"
    "3 unreadable data or checkpoint | 4 diverged (NaN/Inf) | 75 stopped by SIGUSR1/SIGTERM/SIGINT\n"
    "after checkpointing (requeue and rerun the same command to continue).";
}

int main(int argc, char** argv) {
  finemoe::Comm::init(&argc, &argv);
  int rank = 0, world = 1;
  {
    finemoe::Comm probe(1);
    rank = probe.rank();
    world = probe.size();
  }
  finemoe::log::set_rank(rank);
  int code = finemoe::kExitOk;
  try {
    finemoe::ParsedArgs args = finemoe::parse_args(argc, argv, kUsage);
    if (args.help) {
      if (rank == 0) std::cout << args.help_text << std::endl;
    } else if (args.print_config) {
      // Checked for the grid it will run on: this launch's ranks, or at least
      // the EP size the config asks for (a paper-scale config on a laptop).
      args.config.validate(std::max<int>(world, int(args.config.parallel.expert_parallel)));
      if (rank == 0) std::cout << args.config.to_ini();
    } else {
      code = finemoe::train(args.config).exit_code;
    }
  } catch (const finemoe::ConfigError& e) {
    // Identical on every rank: print once, exit normally.
    if (rank == 0) finemoe::log::error("%s", e.what());
    code = e.exit_code();
  } catch (const finemoe::CollectiveError& e) {
    if (rank == 0) finemoe::log::error("%s", e.what());
    code = e.exit_code();
  } catch (const finemoe::Error& e) {
    // One rank's failure: the others may be waiting in a collective, so print
    // here and abort every rank (no hang).
    finemoe::log::error("[rank %d] %s", rank, e.what());
    finemoe::Comm::abort_all(e.exit_code());
  } catch (const std::exception& e) {
    finemoe::log::error("[rank %d] %s", rank, e.what());
    finemoe::Comm::abort_all(finemoe::kExitFailure);
  }
  finemoe::Comm::finalize();
  return code;
}
