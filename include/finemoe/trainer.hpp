// The bulk-synchronous training loop behind moe-train.
//
// Per step: load this rank's slice of global batch s → forward → backward
// (loss scaled by local/global tokens) → gradient sum over the ranks sharing
// each tensor → NaN check → global-norm clip → AdamW with the scheduled lr.
// Around it: progress lines, metrics.h5 rows, evaluation, checkpoints, resume
// and preemption (see README "Exit codes" and "Restart").
#pragma once
#include <cstdint>
#include <string>

#include "finemoe/config.hpp"

namespace finemoe {

struct TrainResult {
  int exit_code = 0;          // kExitOk, kExitPreempted, kExitDiverged
  int64_t steps_done = 0;     // optimizer steps completed (global count)
  double final_loss = 0;      // last step's training loss
  double final_eval_loss = 0; // last evaluation (NaN if none)
};

// Runs (or resumes) the configured training. MPI must be initialised. Throws
// finemoe::Error on failures that are not a clean stop.
TrainResult train(const Config& cfg);

}  // namespace finemoe
