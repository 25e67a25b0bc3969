// moe-train: train a fine-grained MoE (or dense) decoder. See --help.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "finemoe/agreement.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/log.hpp"
#include "finemoe/memory_check.hpp"
#include "finemoe/signals.hpp"
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
    "after checkpointing, or before the first step with nothing written (requeue and rerun the\n"
    "same command to continue).\n\n"
    "Before any work every rank checks that all ranks parsed the same resolved config (and\n"
    "the same command): otherwise every rank exits 2 and the differing keys are printed once.";
}

int main(int argc, char** argv) {
  // Stop signals are requests from the first instruction on: before MPI_Init
  // (a signal while it runs must not kill the process), blocked in this thread
  // before any library starts one (all inherit the mask; one listener thread
  // takes them: signals.cpp), and the handler again after MPI_Init, in case
  // the MPI library installed its own. A request that arrives before
  // the first step ends the run with 75 and nothing written (see below).
  finemoe::install_stop_signal_handlers();
  // Before MPI_Init: the environment then shows only what the launcher set.
  finemoe::exit_when_launcher_dies();
  finemoe::Comm::init(&argc, &argv);
  finemoe::install_stop_signal_handlers();
  int rank = 0;
  int code = finemoe::kExitOk;
  try {
    // Every rank reaches these collectives whatever its arguments: parse
    // errors come after them and travel in agree_on_start (agreement.hpp).
    finemoe::MpiComm world(1);
    rank = world.rank();
    finemoe::log::set_rank(rank);
    const int node_ranks = world.ranks_on_this_node();

    finemoe::ParsedArgs args;
    finemoe::StartStatus start;
    try {
      args = finemoe::parse_args(argc, argv, kUsage);
      start.command = args.help ? "--help" : args.print_config ? "--print-config" : "train";
      if (args.print_config) {
        // Checked for the grid it will run on: this launch's ranks, or at least
        // the EP size the config asks for (a paper-scale config on a laptop).
        args.config.validate(std::max<int>(world.size(), int(args.config.parallel.expert_parallel)));
      } else if (!args.help) {
        args.config.validate(world.size());
        finemoe::check_memory_fits(args.config, world.size(), node_ranks, finemoe::available_memory_bytes());
      }
      if (!args.help) start.config = args.config.to_pairs();
    } catch (const finemoe::Error& e) {
      start.code = e.exit_code();
      start.message = e.what();
    } catch (const std::exception& e) {
      start.code = finemoe::kExitFailure;
      start.message = e.what();
    }
    int sig = 0;
    start.stop = finemoe::stop_requested(&sig);
    const bool stop = finemoe::agree_on_start(world, start) == finemoe::StartVerdict::stop;
    if (stop && start.command == "train") {  // --help and --print-config just finish
      finemoe::log::info("stop signal received during start-up: exiting with code %d before the first step, "
                         "nothing written (rerun the same command to start)",
                         int(finemoe::kExitPreempted));
      code = finemoe::kExitPreempted;
    } else if (args.help) {
      if (rank == 0) std::cout << args.help_text << std::endl;
    } else if (args.print_config) {
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
