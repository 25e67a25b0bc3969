// Uncertainty by refitting on resampled runs, and held-out validation.
//
// Bootstrap: each replicate draws m = round(fraction · n_runs) runs WITH
// replacement (a run's points move together), refits from the full-sample
// optimum plus a coarse grid, and keeps the coefficients. 95 % intervals are
// the 2.5/97.5 percentiles. fraction = 1 is the classic bootstrap; the
// default 0.8 (the paper's 80 %) widens intervals by about 1/sqrt(0.8),
// i.e. errs on the conservative side. Replicates are seeded by their index,
// so results do not depend on --threads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fit.hpp"

namespace finemoe::analysis {

struct BootstrapOptions {
  int replicates = 100;
  double fraction = 0.8;
  int threads = 1;
  uint64_t seed = 1;
  bool progress = true;  // "bootstrap k/n" line on stderr
};

struct ParamInterval {
  std::string name;
  double lo = 0, hi = 0, median = 0, sd = 0;
};

struct BootstrapResult {
  int requested = 0, succeeded = 0;
  std::vector<Law> laws;                 // successful refits, replicate order
  std::vector<ParamInterval> intervals;  // one per law_param_names() entry
};

// The resampling of every bootstrap here (law fits, the G profile): replicate
// i draws m = round(fraction · n_runs) runs with replacement from a generator
// seeded by (seed, i), so a replicate's sample does not depend on threads.
class ReplicateDrawer {
 public:
  ReplicateDrawer(const std::vector<FitPoint>& pts, double fraction, uint64_t seed);
  std::vector<FitPoint> draw(int i) const;

 private:
  std::vector<std::vector<FitPoint>> runs_;
  int m_ = 1;
  uint64_t seed_ = 1;
};

// 2.5/50/97.5 percentiles and standard deviation of v (zeros when empty).
ParamInterval interval_of(const std::string& name, const std::vector<double>& v);

BootstrapResult bootstrap_fit(const std::vector<FitPoint>& pts, const FitOptions& fo, const Law& full_fit,
                              const BootstrapOptions& bo);

struct HoldoutResult {
  bool ok = false;
  std::string rule, message;
  int train_runs = 0, test_runs = 0;
  FitResult train_fit;
  std::vector<FitPoint> test_points;
  std::vector<double> test_predicted;
  double rmse = 0, mare = 0;  // on held-out points, loss units / relative
};

// rule: "largest-n" | "largest-d" | "random:FRAC" | "n-above:X" | "d-above:X" |
// "f-above:X" (held out: runs whose final N, D or training FLOPs exceed X).
// Throws ConfigError on a bad rule.
HoldoutResult holdout_fit(const std::vector<FitPoint>& pts, const std::string& rule, const FitOptions& fo,
                          uint64_t seed);

}  // namespace finemoe::analysis
