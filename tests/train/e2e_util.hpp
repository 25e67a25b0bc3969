// Helpers for end-to-end tests that run the real moe-train executable.
#pragma once
#include <string>
#include <vector>

namespace e2e {

struct Result {
  int code = -1;     // exit status (128+N if killed by signal N)
  std::string out;   // stdout + stderr
};

// Runs a shell command, capturing output.
Result run(const std::string& cmd);
// "moe-train ARGS" on `ranks` ranks (mpirun for ranks > 1).
std::string train_cmd(int ranks, const std::string& args);
// Fresh empty directory under /tmp (remembered for remove_temp_dirs).
std::string temp_dir(const std::string& tag);
// Removes every directory temp_dir made (called when all tests passed; kept
// for inspection after a failure).
void remove_temp_dirs();
// Tiny model: d 64, 2 blocks, seq 32, vocab 64, batch 8, logging every step;
// fp32 engine pinned to openblas (see the definition).
std::string tiny_args(const std::string& run_dir, int steps);
// Train losses, steps and status of a run directory's metrics.h5.
std::vector<double> train_losses(const std::string& run_dir);
std::vector<long long> train_steps(const std::string& run_dir);
std::string run_status(const std::string& run_dir);
// True if `h5diff` finds the /params, AdamW moments and /buffers (the selection
// bias) of two checkpoints identical.
bool checkpoints_identical(const std::string& a, const std::string& b);
int count_occurrences(const std::string& haystack, const std::string& needle);

}  // namespace e2e
