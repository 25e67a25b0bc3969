// Run collection: every metrics.h5 under a directory becomes a run with its
// final loss, N, D, G, E and FLOPs (counting.hpp), or a skip with a reason.
//
// Final loss: the run's final evaluation on the fixed held-out set
// (metrics.h5 final_eval_*, train.final_eval_tokens) when it is there and was
// taken at the last logged step; else (older runs, final_eval_tokens = 0, or
// final_loss = "train") the mean of the last K logged train losses (K =
// final_window, or 10 % of the rows when 0; at least 1), with a warning. With a cosine schedule only the end of
// a run is a valid (N, D) point. Runs with attribute cooldown_branch = 1 were
// cooled down to each of their logged points, so they may also contribute
// `cooldown_points` − 1 intermediate points (same window rule, D = tokens at
// that row), evenly spaced over the run; all points of a run share its group
// so bootstrap and holdout move them together.
#pragma once
#include <string>
#include <vector>

#include "finemoe/metrics.hpp"
#include "fit.hpp"

namespace finemoe::analysis {

struct CollectOptions {
  int64_t final_window = 0;   // K; 0: 10 % of the rows, at least 1
  int cooldown_points = 4;    // points per cooldown-branch run (incl. the final one)
  bool include_running = false;  // use runs whose status is not "completed" (not default)
  int curve_max_points = 400;    // curve kept for plots, subsampled
  bool final_from_eval = true;   // false: always the train window (--final-loss train)
  double read_timeout_s = 60;    // per metrics.h5; a read still running is killed and the file skipped
};

struct RunInfo {
  std::string path, name, status;
  double d_model = 0, n_blocks = 0, E = 1, G = 1;
  bool dense = false, cooldown = false;
  // MoE routing: "expert_choice" or "token_choice" (metrics.h5 attribute
  // config.moe.routing, else the [moe] routing key of the stored config.ini,
  // else expert_choice, the trainer's default); "" for dense runs.
  std::string routing;
  double N = 0, N_active = 0, D = 0, flops_per_token = 0, F = 0;
  double final_loss = 0;
  std::string final_source;       // "eval" (final_eval_*), "train" (window) or "points" (a --points CSV)
  double final_stderr = 0;        // standard error of final_loss; NaN when unknown (train window)
  std::string warning;            // a reason to doubt this run's point (printed per run); "" none
  std::vector<double> eval_tokens, eval_loss;  // periodic evaluations (plots)
  double entropy_rate = 0;  // the data's irreducible loss (nats/token); NaN if unknown (shards)
  int64_t rows = 0, window = 0;
  std::vector<double> curve_tokens, curve_loss;
  std::vector<FitPoint> points;  // final point last; group = index in RunSet::runs
};

struct SkippedRun {
  std::string path, reason;
};

struct RunSet {
  std::vector<RunInfo> runs;
  std::vector<SkippedRun> skipped;
  std::vector<FitPoint> all_points() const;
  // Mean entropy rate of the runs' data (the true c a fit should find), NaN if none knows it.
  double mean_entropy_rate() const;
};

constexpr const char* kExpertChoice = "expert_choice";
constexpr const char* kTokenChoice = "token_choice";
// "EC" / "TC" for tables; the routing itself when unknown.
std::string routing_short(const std::string& routing);

// One run from its metrics; throws DataError with the reason to skip it.
RunInfo run_from_metrics(const RunMetrics& m, const CollectOptions& o);

// Every metrics.h5 under dir (recursive, sorted), each read in a child
// process (read_metrics_isolated). Bad files — corrupt, crashing the HDF5
// library, hanging, FIFOs, unreadable — become skips with their reason; only a
// missing/unreadable directory throws (DataError).
RunSet collect_runs(const std::string& dir, const CollectOptions& o);

}  // namespace finemoe::analysis
