// moe-analyze as a library: options, the collected results, and the driver.
// moe-analyze.cpp is only `return analyze_main(argc, argv);`, so the tests
// run the whole program in-process.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "bootstrap.hpp"
#include "compare.hpp"
#include "fit.hpp"
#include "g_profile.hpp"
#include "guardrails.hpp"
#include "optimal.hpp"
#include "runs.hpp"

namespace finemoe::analysis {

struct AnalyzeOptions {
  std::string runs_dir;               // positional; optional with --points, or --law + --optimal
  std::string points;                 // --points FILE.csv (points.hpp), mixable with runs_dir
  std::string write_points;           // --write-points FILE.csv: the collected fit points
  bool fix_c_entropy = false;         // --fix-c entropy: c = the runs' data_entropy_rate
  bool fix_gamma_profile = false;     // --fix-gamma profile: gamma = the MoE runs' G profile (g_profile.hpp)
  std::string out_dir = "moe-analysis";
  CollectOptions collect;
  FitOptions fit;                     // huber δ, fix-c, solver, l2
  std::string form = "auto";          // auto | fine | chinchilla
  bool slice_g = false;               // extra Chinchilla fits per fixed G
  double max_g = 0;                   // drop MoE runs with G > max_g (0: keep all)
  double expansion = 0;               // E of the fine fit (0: the most common E)
  std::string routing;                // --routing: MoE runs of this routing are fitted ("": the majority's; ties expert_choice)
  BootstrapOptions boot;
  std::string holdout;                // "", largest-n, largest-d, random:FRAC
  std::string law = "fit";            // fit | paper | paper-rounded | a=..,alpha=..
  std::string dense_law = "auto";     // auto | paper | fit | none | a=..,alpha=..,b=..,beta=..,c=..
  std::string optimal;                // budgets; "" = the runs' range and one decade beyond (log:1e18:1e25:8 without runs)
  OptimalOptions opt;
  bool aspect_given = false;          // --aspect given; else the fitted runs' d_model/n_blocks when they share one
  bool json = false;                  // fit.json to stdout, human text to stderr
  bool plots = true;
  std::string gnuplot;                // gnuplot executable ("" = the one found at build time / PATH)
  bool quiet = false;
};

struct FitReport {
  std::string label;                  // "moe", "dense", "G=4"
  FitOptions options;
  std::vector<FitPoint> points;       // group = index into RunSet::runs
  FitResult fit;
  bool has_bootstrap = false;
  BootstrapResult boot;
  bool has_holdout = false;
  HoldoutResult holdout;
  Guardrails guard;                   // flags on this fit (guardrails.hpp)
};

struct OptimalReport {
  bool present = false;
  std::string law_name, dense_name;
  Law law, dense;
  bool has_dense = false;
  std::string dense_note;             // what the dense comparison is against (report sentence)
  // Empty, or a sentence saying that the table rests on fits with flagged
  // coefficients (guardrails.hpp): its numbers inherit those flags.
  std::string flags_note;
  OptimalOptions options;
  std::vector<OptimalRow> rows;
  // The fitted runs' range; rows beyond 10x of it are marked extrapolated.
  bool has_range = false;
  double F_min = 0, F_max = 0, N_max = 0, D_max = 0;
};

struct Analysis {
  AnalyzeOptions options;
  RunSet runs;
  std::vector<std::string> notes;     // runs collected but left out of a fit, and why
  // The MoE law is fitted per routing: the one fitted ("" when there are no
  // MoE runs), how it was chosen ("--routing" or "majority"), MoE runs per
  // routing, and the one line saying how many runs of the other routing were
  // left out of the fit and why ("" when none).
  std::string routing, routing_chosen_by;
  std::map<std::string, int> routing_counts;
  int routing_excluded = 0;
  std::string routing_note;
  RoutingComparison routing_cmp;      // expert vs token choice (both present)
  std::vector<LossVsG> loss_vs_g;     // loss vs G per (size, D), fitted routing's MoE runs
  std::vector<LossVsGIso> loss_vs_g_iso;  // loss vs G per size at equal F (interpolated in log F), same runs
  std::string c_note;                 // how c was fixed, when it was
  std::string gamma_note;             // how gamma was fixed, when it was
  std::vector<FitReport> fits;
  // γ from the within-(N, D) shape of loss vs G of the MoE fit's points
  // (g_profile.hpp); computed when the MoE fit is the fine-grained form.
  bool has_g_profile = false;
  GProfile g_profile;
  OptimalReport optimal;
};

// Parses argv; returns false and sets `help` text when --help was asked.
// Throws ConfigError on bad options.
bool parse_analyze_args(int argc, const char* const* argv, AnalyzeOptions& o, std::string& help);

// Runs everything that the options ask for; never throws for a bad run file.
Analysis run_analysis(const AnalyzeOptions& o);

// fit.json, runs.csv, optimal.csv, report.md (+ plots) under o.out_dir.
void write_outputs(const Analysis& a);
std::string fit_json(const Analysis& a);
// Returns the base names of the plots drawn (empty when gnuplot is missing).
std::vector<std::string> make_plots(const Analysis& a);

int analyze_main(int argc, const char* const* argv);

}  // namespace finemoe::analysis
