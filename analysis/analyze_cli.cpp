// Command line of moe-analyze (Boost.Program_options directly: the trainer's
// config schema does not apply to an offline analysis tool).
#include <boost/program_options.hpp>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "analyze.hpp"
#include "finemoe/error.hpp"

namespace po = boost::program_options;

namespace finemoe::analysis {
namespace {

const char* kUsage = R"(moe-analyze RUNS_DIR [options]
moe-analyze --points FILE.csv [RUNS_DIR] [options]
moe-analyze --law paper --optimal 1e18,1e20,1e22 [options]

Fits scaling laws over a directory of finished finemoe runs and computes
compute-optimal configurations.

Runs: every metrics.h5 under RUNS_DIR (recursive), plus the rows of a
--points CSV. A run's final loss is its final evaluation on the fixed held-out
set (train.final_eval_tokens; metrics.h5 final_eval_loss); runs without one
fall back, with a warning each, to the mean of the last K logged train losses.
N, N_active, F/token come from the
shared counting code (d_model, n_blocks, E, G attributes); D is the token count
of the last row. Runs not 'completed', unreadable, with NaN in the window or
missing attributes are listed with the reason and skipped (each file is read in
a child process, so a damaged one that crashes or hangs the HDF5 library is
skipped too; exit 0 while usable runs remain, 3 when none is usable). Runs with attribute
cooldown_branch=1 also contribute intermediate points (--cooldown-points).

Laws (loss L in nats/token, N = n_blocks*d^2*(8E+4), D tokens):
  fine-grained  L = c + (g/G^gamma + a)/N^alpha + b/D^beta
  chinchilla    L = c + a/N^alpha + b/D^beta  (dense runs, one G, --slice-g)
Fit: Huber(delta) on log L_pred - log L_obs, plus a tiny L2 on the log-space
parameters, with Ceres (Levenberg-Marquardt by default, --solver bfgs as in
the paper), from a grid of starting points; the lowest objective wins.
Positive coefficients are fitted as exp(theta) (Chinchilla's logsumexp form).

Compute-optimal allocation: d_model = 64*n_blocks (--aspect), training FLOPs
F = (12 d^2 * 6 + d*E*G*14) * n_blocks * D; for each budget and each G the
loss is minimised over continuous n_blocks, then over G. The multiplier is the
dense compute (F = 6 N D, dense law) reaching the MoE optimum, divided by F.

Guardrails (terminal, report.md, fit.json "flags"): coefficients on a solver
bound, set by the L2 prior (moved > 1 % by a lambda = 0 refit), with bootstrap
intervals wider than a decade (a, b, g, c) or +-50 % (exponents), with a
bimodal bootstrap distribution, or c below the data's entropy rate; a misfit when
the RMSE exceeds 2x the runs' final-eval standard errors; optimal
rows more than 10x beyond the runs' F, N or D are marked extrapolated.

Routing: each MoE run's moe.routing (metrics.h5 config.moe.routing) is
expert_choice or token_choice. The MoE law is fitted per routing (--routing;
default the majority's): runs of the other routing are not fitted but compared
with the fitted ones at the same (E, n_blocks, d_model, D, G) (final loss +-
SE, TC - EC, whether it exceeds 2 combined SE; plot 'routing'). Also, from the
data alone: final loss vs G for every (size, D) with two or more G, with the
dense run at the same size and D, the FLOPs spread, and the best G (plot
'loss_vs_g').

Outputs in --out: fit.json, runs.csv, optimal.csv, report.md, plots/*.png|svg.
Exit status: 0 when a law was fitted or an optimal table was computed from a
given law; 3 when nothing could be fitted or a --points CSV is unusable (the
message names the file, line and column); 2 for a bad command line.)";

}  // namespace

bool parse_analyze_args(int argc, const char* const* argv, AnalyzeOptions& o, std::string& help) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  po::options_description d("Options");
  // clang-format off
  d.add_options()
    ("help,h", "show this help and exit")
    ("out", po::value<std::string>(), "output directory [default: moe-analysis]")
    ("final-loss", po::value<std::string>(), "eval: a run's final loss is its final evaluation on the fixed held-out set (metrics.h5 final_eval_*), falling back to the train window with a warning per run; train: always the train window [default: eval]")
    ("final-window", po::value<int64_t>(), "K: train-window final loss = mean of the last K logged train losses [default: 10% of the rows, at least 1]")
    ("points", po::value<std::string>(), "also fit the runs of FILE.csv: columns N, D, loss; optional G, E, N_active, F, run, weight, dense, routing, loss_se, n_blocks + d_model (see docs/analysis.md)")
    ("write-points", po::value<std::string>(), "write the collected fit points as a --points CSV to FILE")
    ("cooldown-points", po::value<int>(), "points taken from each cooldown-branch run, final one included [default: 4]")
    ("include-running", "also use runs whose status is not 'completed' (their curves are not finished: not valid law points)")
    ("form", po::value<std::string>(), "law of the main fit: auto | fine | chinchilla; auto = fine when the MoE runs have several G [default: auto]")
    ("fix-c", po::value<std::string>(), "fix the irreducible loss c instead of fitting it: VALUE (> 0), or 'entropy' = the runs' data_entropy_rate (the true floor; the extra loss of a finite context window is not included)")
    ("fix-gamma", po::value<std::string>(), "fix gamma of the fine-grained MoE fit: VALUE, or 'profile' = the G profile's gamma (loss vs G at fixed N and D, see docs/analysis.md), whose bootstrap replicates carry into the law's intervals")
    ("huber-delta", po::value<double>(), "Huber delta on log-loss residuals: 0.1 paper, 1e-3 Chinchilla [default: 0.1]")
    ("solver", po::value<std::string>(), "lm (Levenberg-Marquardt, bounded) | bfgs (Ceres line search, as the paper) [default: lm]")
    ("l2", po::value<double>(), "weight of the L2 penalty on the log-space parameters [default: 1e-8]")
    ("slice-g", "also fit the Chinchilla form separately for each G")
    ("max-g", po::value<double>(), "leave MoE runs with G > this out of the fits (paper: 16) [default: keep all]")
    ("routing", po::value<std::string>(), "expert_choice | token_choice: the MoE law (fit, bootstrap, holdout, guardrails, optimal table, dense multiplier) is fitted on the MoE runs of this routing only; the others are compared with them at the same (E, size, D, G), not fitted [default: the routing of most MoE runs; ties expert_choice]")
    ("expansion", po::value<double>(), "E: fit MoE runs with this expansion rate, and use it in the allocation [default: the most common E; 64 for a given law]")
    ("bootstrap", po::value<int>(), "bootstrap refits over resampled runs (0: off) [default: 100]")
    ("bootstrap-fraction", po::value<double>(), "runs per replicate, as a fraction of all runs, drawn with replacement [default: 0.8]")
    ("threads", po::value<int>(), "threads for bootstrap refits [default: all cores]")
    ("seed", po::value<uint64_t>(), "seed of bootstrap and random holdout [default: 1]")
    ("holdout", po::value<std::string>(), "refit without some runs, report their RMSE/MARE: largest-n | largest-d | random:FRAC | n-above:X | d-above:X | f-above:X (test on runs whose final N, D or FLOPs exceed X)")
    ("law", po::value<std::string>(), "law of the optimal table: fit | paper (E=64, more digits, c=0.472: reproduces Table 2) | paper-rounded (Table 1) | a=..,alpha=..,b=..,beta=..,g=..,gamma=..,c=.. [default: fit]")
    ("dense-law", po::value<std::string>(), "dense law of the compute multiplier: auto | fit (the dense runs' fit: same data) | paper (a 16.3, alpha .126, b 26.7, beta .127, c .47: web text, another corpus) | none | a=..,alpha=..,b=..,beta=..,c=.. [default: auto = fit when dense runs were fitted, paper with --law paper, else none]")
    ("optimal", po::value<std::string>(), "budgets in FLOPs: 1e18,1e20,... or log:FMIN:FMAX:COUNT [default: 8 budgets from the smallest run's FLOPs to 10x the largest; log:1e18:1e25:8 without runs]")
    ("aspect", po::value<double>(), "d_model / n_blocks of the optimal shapes [default: the fitted runs' ratio when they all share one, else 64]")
    ("granularities", po::value<std::string>(), "G candidates of the allocation [default: 1,2,4,...,256]")
    ("json", "print fit.json to stdout (human-readable lines go to stderr)")
    ("no-plots", "do not run gnuplot")
    ("gnuplot", po::value<std::string>(), "gnuplot executable [default: the one found at build time, else 'gnuplot']")
    ("quiet,q", "only errors and the final summary");
  // clang-format on
  po::options_description hidden;
  hidden.add_options()("runs-dir", po::value<std::vector<std::string>>());
  po::positional_options_description pos;
  pos.add("runs-dir", -1);
  po::options_description all;
  all.add(d).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
  } catch (const po::unknown_option& e) {
    throw ConfigError("unknown option '" + e.get_option_name() + "' (see --help)");
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + e.what());
  }
  if (vm.count("help")) {
    std::ostringstream os;
    os << kUsage << "\n\n" << d;
    help = os.str();
    return false;
  }
  if (vm.count("runs-dir")) {
    auto v = vm["runs-dir"].as<std::vector<std::string>>();
    if (v.size() > 1) throw ConfigError("expected one RUNS_DIR, got '" + v[0] + "' and '" + v[1] + "'");
    o.runs_dir = v[0];
  }
  auto s = [&](const char* k, std::string& dst) { if (vm.count(k)) dst = vm[k].as<std::string>(); };
  s("out", o.out_dir);
  s("form", o.form);
  s("holdout", o.holdout);
  s("law", o.law);
  s("dense-law", o.dense_law);
  s("optimal", o.optimal);
  s("points", o.points);
  s("write-points", o.write_points);
  if (vm.count("final-loss")) {
    const std::string v = vm["final-loss"].as<std::string>();
    if (v != "eval" && v != "train") throw ConfigError("--final-loss: expected eval or train, got '" + v + "'");
    o.collect.final_from_eval = v == "eval";
  }
  s("gnuplot", o.gnuplot);
  if (vm.count("final-window")) o.collect.final_window = vm["final-window"].as<int64_t>();
  if (vm.count("cooldown-points")) o.collect.cooldown_points = vm["cooldown-points"].as<int>();
  o.collect.include_running = vm.count("include-running") > 0;
  if (vm.count("fix-c")) {
    const std::string v = vm["fix-c"].as<std::string>();
    if (v == "entropy") {
      o.fix_c_entropy = true;
    } else {
      char* end = nullptr;
      o.fit.fix_c = true;
      o.fit.c_value = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0') throw ConfigError("--fix-c: expected a number > 0 or 'entropy', got '" + v + "'");
    }
  }
  if (vm.count("fix-gamma")) {
    const std::string v = vm["fix-gamma"].as<std::string>();
    if (v == "profile") {
      o.fix_gamma_profile = true;
    } else {
      char* end = nullptr;
      o.fit.fix_gamma = true;
      o.fit.gamma_value = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(o.fit.gamma_value > -1 && o.fit.gamma_value <= 3))
        throw ConfigError("--fix-gamma: expected a number in (-1, 3] or 'profile', got '" + v + "'");
    }
  }
  if (vm.count("huber-delta")) o.fit.huber_delta = vm["huber-delta"].as<double>();
  if (vm.count("l2")) o.fit.l2 = vm["l2"].as<double>();
  if (vm.count("solver")) {
    std::string v = vm["solver"].as<std::string>();
    if (v == "lm") o.fit.solver = SolverKind::LevenbergMarquardt;
    else if (v == "bfgs") o.fit.solver = SolverKind::Bfgs;
    else throw ConfigError("--solver: expected lm or bfgs, got '" + v + "'");
  }
  o.slice_g = vm.count("slice-g") > 0;
  if (vm.count("max-g")) o.max_g = vm["max-g"].as<double>();
  if (vm.count("routing")) {
    o.routing = vm["routing"].as<std::string>();
    if (o.routing != kExpertChoice && o.routing != kTokenChoice)
      throw ConfigError("--routing: expected expert_choice or token_choice, got '" + o.routing + "'");
  }
  if (vm.count("expansion")) o.expansion = vm["expansion"].as<double>();
  o.boot.threads = int(hw);
  if (vm.count("bootstrap")) o.boot.replicates = vm["bootstrap"].as<int>();
  if (vm.count("bootstrap-fraction")) o.boot.fraction = vm["bootstrap-fraction"].as<double>();
  if (vm.count("threads")) o.boot.threads = vm["threads"].as<int>();
  if (vm.count("seed")) o.boot.seed = vm["seed"].as<uint64_t>();
  if (vm.count("aspect")) {
    o.opt.aspect = vm["aspect"].as<double>();
    o.aspect_given = true;
  }
  if (vm.count("granularities")) {
    o.opt.granularities.clear();
    std::stringstream ss(vm["granularities"].as<std::string>());
    std::string it;
    while (std::getline(ss, it, ',')) {
      try {
        double g = std::stod(it);
        if (!(g >= 1)) throw std::invalid_argument("");
        o.opt.granularities.push_back(g);
      } catch (const std::exception&) {
        throw ConfigError("--granularities: '" + it + "' is not a number >= 1");
      }
    }
    if (o.opt.granularities.empty()) throw ConfigError("--granularities: empty list");
  }
  o.json = vm.count("json") > 0;
  o.plots = vm.count("no-plots") == 0;
  o.quiet = vm.count("quiet") > 0;

  // Range checks, naming the option.
  if (o.form != "auto" && o.form != "fine" && o.form != "chinchilla")
    throw ConfigError("--form: expected auto, fine or chinchilla, got '" + o.form + "'");
  if (o.fit.fix_c && !(o.fit.c_value > 0)) throw ConfigError("--fix-c: must be > 0");
  if (!(o.fit.huber_delta > 0)) throw ConfigError("--huber-delta: must be > 0");
  if (o.fit.l2 < 0) throw ConfigError("--l2: must be >= 0");
  if (o.boot.replicates < 0) throw ConfigError("--bootstrap: must be >= 0");
  if (!(o.boot.fraction > 0 && o.boot.fraction <= 1)) throw ConfigError("--bootstrap-fraction: must be in (0, 1]");
  if (o.boot.threads < 1) throw ConfigError("--threads: must be >= 1");
  if (o.collect.final_window < 0) throw ConfigError("--final-window: must be >= 0");
  if (o.collect.cooldown_points < 1) throw ConfigError("--cooldown-points: must be >= 1");
  if (!(o.opt.aspect > 0)) throw ConfigError("--aspect: must be > 0");
  if (o.expansion < 0) throw ConfigError("--expansion: must be > 0");
  if (o.runs_dir.empty() && o.points.empty() && (o.law == "fit" || o.optimal.empty()))
    throw ConfigError("no RUNS_DIR given: pass a directory of runs, --points FILE.csv, or a law and budgets "
                      "(e.g. --law paper --optimal 1e20)");
  if (o.fix_c_entropy && o.runs_dir.empty() && o.points.empty())
    throw ConfigError("--fix-c entropy: needs runs that carry data_entropy_rate");
  return true;
}

}  // namespace finemoe::analysis
