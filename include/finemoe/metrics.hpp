// metrics.h5: loss curves, evaluation and routing telemetry of one run
// (layout: h5layout.hpp). Written by rank 0 only; every append is flushed so a
// killed job leaves a readable file with every row written before the kill.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/moe.hpp"

namespace finemoe {

struct TrainRow {
  int64_t step = 0, tokens = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, mfu = 0;
  double aux_loss = 0;  // auxiliary router losses (h5layout.hpp); NaN when read from a version-1 file
};
struct EvalRow {
  int64_t step = 0, tokens = 0;
  double loss = 0;
};
// The end-of-run evaluation on the fixed held-out set (final_eval.hpp).
struct FinalEval {
  int64_t step = 0, tokens = 0;
  double loss = 0, stderr_loss = 0;  // mean nats/token and its standard error
};

class MetricsWriter {
 public:
  // resume_step < 0: create a fresh file (replacing any old one).
  // resume_step >= 0: open the existing file and drop rows with step >
  // resume_step, so the resumed curve continues exactly; creates it if absent.
  // A corrupt file is moved to PATH.corrupt[-N] and its readable rows up to
  // resume_step copied into a new file (logged). Errors, file untouched:
  // Error (exit 1) if the OS refuses access; DataError (exit 3) if it is not
  // a regular file, has another format_version or another routing shape.
  // Writes/refreshes all attributes; status becomes "running".
  MetricsWriter(const std::string& path, const Config& cfg, const ModelCounts& counts, double entropy_rate,
                int64_t resume_step);
  ~MetricsWriter();
  void append_train(const TrainRow& row);
  void append_eval(const EvalRow& row);
  void set_final_eval(const FinalEval& fe);
  // One row: per block, tokens per expert, unserved fraction and entropy.
  void append_routing(int64_t step, const std::vector<RoutingStats>& per_block);
  void set_status(const std::string& status);  // running|completed|failed|preempted
  void set_attr(const std::string& name, double value);
  void set_attr(const std::string& name, const std::string& value);
  void flush();
  // Final flush and close, checked (Error naming the file on failure). The
  // destructor does the same but can only warn.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Everything moe-analyze and the tests need from one metrics.h5.
struct RunMetrics {
  std::string path;
  std::map<std::string, std::string> str_attrs;   // status, code_version, config, config.* ...
  std::map<std::string, double> num_attrs;        // N, N_active, E, G, flops_per_token, ...
  std::vector<TrainRow> train;
  std::vector<EvalRow> eval;
  bool has_final_eval = false;  // all four final_eval_* attributes present
  FinalEval final_eval;
  std::vector<int64_t> routing_step;
  int64_t routing_blocks = 0, routing_experts = 0;
  std::vector<int64_t> routing_expert_load;        // [rows, blocks, experts]
  std::vector<double> routing_dropped, routing_entropy;  // [rows, blocks]
  std::vector<double> routing_balance, routing_z;        // [rows, blocks]; NaN from a version-1 file
};

// Throws DataError naming the file and the problem (missing, not a regular
// file, not HDF5, missing dataset, wrong format version) — never an HDF5
// error stack. In-process: a file damaged so that the HDF5 library itself
// crashes takes this process down; use read_metrics_isolated for files of
// unknown health.
RunMetrics read_metrics(const std::string& path);

// What a tolerant read got out of a metrics.h5 that may be damaged.
struct MetricsSalvage {
  RunMetrics metrics;           // the parts that read cleanly; the others stay empty
  int64_t format_version = -1;  // -1: unknown (missing or unreadable)
  bool train_ok = false, eval_ok = false, routing_ok = false, attrs_ok = false;
  std::string problem;          // the first failure, naming the file; "" if all of it read cleanly
  bool clean() const { return problem.empty(); }
};

// Reads `path` in a forked child process that hands each part (train, eval,
// routing rows, attributes) to this process as soon as it has read it. A
// file that makes the HDF5 library crash or loop costs only the child: the
// problem says so ("crashed the HDF5 library", "did not finish within"), and
// the parts read before the crash are kept. Never blocks on a FIFO; never
// throws for a bad file (Error only if no child process can be started).
// routing_values = false: the routing datasets are still read and checked in
// full, but only their steps and shape come back (a health check of a large
// file without copying its routing telemetry).
MetricsSalvage salvage_metrics(const std::string& path, double timeout_s = 60, bool routing_values = true);

// Strict and isolated: read_metrics' result and messages, but run in a child
// process (what moe-analyze uses on every file). Throws DataError.
RunMetrics read_metrics_isolated(const std::string& path, double timeout_s = 60);

}  // namespace finemoe
