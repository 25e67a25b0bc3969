// Sweep generator: expands a grid spec into run configs sized by compute.
//
// A spec is an INI file:
//
//   [sweep]
//   name        = demo            ; run-name prefix
//   base        = tiny.ini        ; base config, relative to the spec (optional)
//   granularity = 1, 2, 4         ; G values (default: the base config's)
//   experts     = 8               ; E values (default: the base config's)
//   n_blocks    = 1, 2            ; model sizes; d_model = aspect_ratio * n_blocks
//   aspect_ratio= 64              ; (default 64, the paper's shape)
//   d_model     = 96, 128         ; OR explicit widths (crossed with n_blocks,
//                                 ;    which then defaults to the base's)
//   flops       = 1e13, 3e13      ; training budgets F: D = F / (F per token)
//   tokens      = 1e6             ; OR token budgets D (exactly one of the two)
//   dense       = false           ; true: add a dense baseline per size and
//                                 ;    budget; only: dense runs only
//   max_flops   = 2e12            ; leave out grid points whose realised
//                                 ;    training FLOPs exceed this (e.g. the
//                                 ;    largest size at the largest token
//                                 ;    budget); moe-sweep lists them
//   seeds       = 1234            ; train.seed values (default: the base's)
//   ranks       = 1               ; MPI ranks per run (validation, sbatch -n)
//   [slurm]                       ; optional, for sweep.sbatch
//   time = 01:00:00  partition = gpu  account = x  cpus_per_task = 2
//   max_parallel = 4 (array throttle %4)   signal_seconds = 120
//   extra = --gpus-per-task=1 --constraint=h100   (raw sbatch options)
//   [model] / [moe] / [train] / [data] / [parallel]
//   any config key: overrides the base for every run
//   [slice.tc]                    ; optional extra grids, any number: the main
//   n_blocks = 2                  ;    grid with these grid keys and dotted
//   granularity = 1, 4            ;    config keys on top (name, base and
//   dense = false                 ;    ranks are the sweep's); runs are named
//   moe.routing = token_choice    ;    NAME-tc-L2-...; same manifest, same
//                                 ;    Slurm array
//
// Each run's steps = round(D / (train.batch_size * model.seq_len)); the
// manifest reports the realised D = steps * batch * seq and F = D * F/token,
// where F/token comes from count_model() (counting.hpp), the same function the
// trainer and moe-analyze use.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"

namespace finemoe {

struct SweepSlurm {
  std::string time;            // --time
  std::string partition;       // --partition
  std::string account;         // --account
  int64_t cpus_per_task = 0;   // --cpus-per-task (0: not set)
  int64_t max_parallel = 0;    // --array=0-N%max_parallel (0: no throttle)
  int64_t signal_seconds = 120;// --signal=B:USR1@seconds
  std::string extra;           // raw sbatch options, one #SBATCH line each
};

// A [slice.NAME] section as written: applied by expand_sweep.
struct SweepSlice {
  std::string name;
  struct Entry {
    std::string key, value;
    int line = 0;
  };
  std::vector<Entry> entries;
};

struct SweepSpec {
  std::string origin;          // spec file name, for messages
  std::string text;            // the spec as written (copied next to the runs)
  std::string name = "run";
  Config base;                 // base file + spec overrides
  std::vector<int64_t> experts, granularity, n_blocks, d_model, seeds;
  int64_t aspect_ratio = 64;
  std::vector<double> flops, tokens;
  std::string dense = "false"; // false | true | only
  int64_t ranks = 1;
  double max_flops = 0;        // 0: no cap
  SweepSlurm slurm;
  std::vector<SweepSlice> slices;  // extra grids, expanded after the main one
};

struct SweepRun {
  std::string name;
  Config config;               // fully resolved and validated
  ModelCounts counts;
  double budget = 0;           // the spec's F or D this run was sized from
  bool budget_is_flops = true;
  int64_t steps = 0;
  double D = 0;                // realised tokens = steps * batch * seq
  double F = 0;                // realised FLOPs = D * counts.flops_per_token
};

// Parses a spec. `base_dir` resolves a relative `base =` path. Throws
// ConfigError naming the file and the key ("sweep.granularity", "moe.foo").
SweepSpec parse_sweep_spec(const std::string& text, const std::string& origin, const std::string& base_dir);
SweepSpec load_sweep_spec(const std::string& path);

// Expands the main grid, then each slice's; every config gets run.dir = runs_dir/NAME. Names are
// unique (checked). Throws ConfigError naming the run and the key when a
// combination is invalid (e.g. G not dividing 4*d_model) or a budget is
// smaller than one step.
// Grid points left out by sweep.max_flops are appended to `capped` (name and
// realised F) when it is given.
std::vector<SweepRun> expand_sweep(const SweepSpec& spec, const std::string& runs_dir,
                                   std::vector<std::pair<std::string, double>>* capped = nullptr);

// sweep.tsv: header + one line per run:
// name N N_active G E D F steps d_model n_blocks flops_per_token budget
std::string sweep_manifest(const std::vector<SweepRun>& runs);

// The Slurm array script: task i execs `train_sbatch RUNS_DIR/NAME_i/config.ini`
// with FINEMOE_TRAIN defaulting to `moe_train`. Paths should be absolute.
std::string sweep_sbatch(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& runs_dir,
                         const std::string& train_sbatch, const std::string& moe_train);

// Compact, file-name-safe number: 1e+15 -> "1e15", 2500000 -> "2.5e6", 512 -> "512".
std::string sweep_number(double x);

// Writes RUNS_DIR/NAME/config.ini for every run, sweep.tsv and sweep_spec.ini
// (and logs/). An existing config.ini with different content is an error
// naming it unless `force` (a run may be in progress there). Returns the
// number of config files written (unchanged ones are not rewritten).
int write_sweep(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& runs_dir, bool force);

}  // namespace finemoe
