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
};

// Throws DataError naming the file and the problem (missing, not HDF5,
// missing dataset, wrong format version) — never an HDF5 error stack.
RunMetrics read_metrics(const std::string& path);

}  // namespace finemoe
