// Run directories for the tests, written with finemoe::MetricsWriter — the
// same layout code as the trainer — so the analysis reads what moe-train writes.
#pragma once
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "analyze.hpp"
#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/metrics.hpp"

namespace finemoe::analysis::testing {

namespace fs = std::filesystem;

struct FixtureRun {
  int64_t d_model = 256, n_blocks = 4, E = 64, G = 1;
  double D = 1e9;            // tokens at the last row
  double final_loss = 3.0;   // the last 20 % of the rows sit exactly here
  int rows = 20;
  std::string status = "completed";
  bool nan_at_end = false;
  bool dense = false;
  bool cooldown = false;
  double entropy_rate = NAN;  // data_entropy_rate attribute (NaN: unknown, as for shards)
  double final_eval = NAN;    // finite: a final evaluation at the last step with this loss
  double final_eval_se = 0.004;  // its standard error
  std::string routing = "expert_choice";  // moe.routing (config.moe.routing attribute)
};

// Writes DIR/NAME/metrics.h5 and returns its path.
inline std::string write_run(const fs::path& dir, const std::string& name, const FixtureRun& f) {
  fs::create_directories(dir / name);
  Config cfg;
  cfg.model.d_model = f.d_model;
  cfg.model.n_blocks = f.n_blocks;
  cfg.model.ffn = f.dense ? Ffn::dense : Ffn::moe;
  cfg.moe.experts = f.E;
  cfg.moe.granularity = f.G;
  // A routing this build does not know (a run from another version) cannot be
  // in a Config: it is written over the attribute below.
  const bool known_routing = f.routing == "expert_choice" || f.routing == "token_choice";
  if (known_routing) cfg.moe.routing = parse_routing(f.routing);
  const ModelCounts counts = count_model(cfg.shape());
  const std::string path = (dir / name / "metrics.h5").string();
  MetricsWriter w(path, cfg, counts, f.entropy_rate, -1);
  if (!known_routing) w.set_attr(std::string(h5layout::kAttrConfigPrefix) + "moe.routing", f.routing);
  for (int i = 0; i < f.rows; ++i) {
    TrainRow r;
    r.step = i + 1;
    r.tokens = int64_t(std::llround(f.D * double(i + 1) / f.rows));
    const double frac = double(i + 1) / f.rows;
    r.loss = frac >= 0.8 ? f.final_loss : f.final_loss + 2.0 * (0.8 - frac);
    if (f.nan_at_end && i == f.rows - 1) r.loss = std::nan("");
    r.lr = 1e-3;
    w.append_train(r);
  }
  if (f.cooldown) w.set_attr("cooldown_branch", 1.0);
  if (std::isfinite(f.final_eval)) w.set_final_eval(FinalEval{f.rows, 1 << 21, f.final_eval, f.final_eval_se});
  w.set_status(f.status);
  return path;
}

// A fresh, empty directory under the system temp dir.
inline fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("finemoe_analysis_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// Runs moe-analyze's main in-process with these arguments; returns its exit code.
inline int run_cli(std::vector<std::string> args) {
  std::vector<const char*> argv = {"moe-analyze"};
  for (auto& a : args) argv.push_back(a.c_str());
  return analyze_main(int(argv.size()), argv.data());
}

}  // namespace finemoe::analysis::testing
