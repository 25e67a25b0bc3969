// The moe-analyze driver: collect runs → fits (+ bootstrap, holdout) →
// optimal allocation → outputs. Human-readable progress goes to stdout, or to
// stderr under --json (stdout is then the JSON alone).
#include "analyze.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "finemoe/error.hpp"

namespace finemoe::analysis {
namespace {

FILE* human(const AnalyzeOptions& o) { return o.json ? stderr : stdout; }

FitReport make_fit(const std::string& label, std::vector<FitPoint> pts, FitOptions fo, const AnalyzeOptions& o) {
  FitReport r;
  r.label = label;
  r.options = fo;
  r.points = std::move(pts);
  r.fit = fit_law(r.points, fo);
  if (!r.fit.ok) return r;
  if (o.boot.replicates > 0) {
    BootstrapOptions bo = o.boot;
    bo.progress = !o.quiet;
    r.boot = bootstrap_fit(r.points, fo, r.fit.law, bo);
    r.has_bootstrap = true;
  }
  if (!o.holdout.empty()) {
    r.holdout = holdout_fit(r.points, o.holdout, fo, o.boot.seed);
    r.has_holdout = true;
  }
  return r;
}

void print_fit(FILE* f, const FitReport& r) {
  if (!r.fit.ok) {
    std::fprintf(f, "fit %-8s: not fitted: %s\n", r.label.c_str(), r.fit.message.c_str());
    return;
  }
  std::set<int> runs;
  for (const auto& p : r.points) runs.insert(p.group);
  std::fprintf(f, "fit %-8s (%s, %s, %zu points from %zu runs): objective %.4g  RMSE %.4g nats  MARE %.3g%%\n",
               r.label.c_str(), form_name(r.options.form), solver_name(r.options.solver), r.points.size(),
               runs.size(), r.fit.objective, r.fit.rmse, 100 * r.fit.mare);
  const auto names = law_param_names();
  const auto vals = law_values(r.fit.law);
  for (size_t k = 0; k < names.size(); ++k) {
    if (r.options.form != LawForm::Fine && (names[k] == "g" || names[k] == "gamma")) continue;
    std::fprintf(f, "    %-6s = %-10.5g", names[k].c_str(), vals[k]);
    if (names[k] == "c" && r.options.fix_c) std::fprintf(f, " (fixed)");
    else if (r.has_bootstrap && r.boot.succeeded > 1)
      std::fprintf(f, " 95%% [%.5g, %.5g]", r.boot.intervals[k].lo, r.boot.intervals[k].hi);
    std::fprintf(f, "\n");
  }
  if (r.has_bootstrap)
    std::fprintf(f, "    bootstrap: %d/%d refits succeeded\n", r.boot.succeeded, r.boot.requested);
  if (r.has_holdout) {
    if (r.holdout.ok)
      std::fprintf(f, "    holdout %s: %d runs held out, RMSE %.4g nats, MARE %.3g%%\n", r.holdout.rule.c_str(),
                   r.holdout.test_runs, r.holdout.rmse, 100 * r.holdout.mare);
    else
      std::fprintf(f, "    holdout %s: %s\n", r.holdout.rule.c_str(), r.holdout.message.c_str());
  }
}

}  // namespace

Analysis run_analysis(const AnalyzeOptions& o) {
  Analysis a;
  a.options = o;
  FILE* out = human(o);
  if (!o.runs_dir.empty()) {
    a.runs = collect_runs(o.runs_dir, o.collect);
    if (!o.quiet) {
      std::fprintf(out, "runs: %zu usable, %zu skipped under %s\n", a.runs.runs.size(), a.runs.skipped.size(),
                   o.runs_dir.c_str());
      for (const auto& s : a.runs.skipped) std::fprintf(out, "  skipped %s: %s\n", s.path.c_str(), s.reason.c_str());
    } else if (!a.runs.skipped.empty()) {
      std::fprintf(stderr, "moe-analyze: warning: %zu of %zu metrics.h5 files skipped (reasons in report.md and fit.json)\n",
                   a.runs.skipped.size(), a.runs.skipped.size() + a.runs.runs.size());
    }
    if (!o.quiet) {
      const double h = a.runs.mean_entropy_rate();
      if (std::isfinite(h))
        std::fprintf(out, "data entropy rate (true irreducible loss, compare with the fitted c): %.4f nats/token\n", h);
    }
  }

  // Split the runs: dense ones, MoE ones of the chosen E (and G <= max_g).
  std::map<double, int> e_count;
  for (const auto& r : a.runs.runs)
    if (!r.dense) e_count[r.E]++;
  double E = o.expansion;
  if (E == 0 && !e_count.empty())
    E = std::max_element(e_count.begin(), e_count.end(), [](auto& x, auto& y) { return x.second < y.second; })->first;
  std::vector<FitPoint> moe, dense;
  std::map<double, std::vector<FitPoint>> by_g;
  for (size_t i = 0; i < a.runs.runs.size(); ++i) {
    const auto& r = a.runs.runs[i];
    char buf[512];
    if (r.dense) {
      dense.insert(dense.end(), r.points.begin(), r.points.end());
      continue;
    }
    if (r.E != E) {
      std::snprintf(buf, sizeof buf, "%s: E = %g, not the fitted E = %g (use --expansion)", r.name.c_str(), r.E, E);
      a.notes.push_back(buf);
      continue;
    }
    if (o.max_g > 0 && r.G > o.max_g) {
      std::snprintf(buf, sizeof buf, "%s: G = %g > --max-g %g", r.name.c_str(), r.G, o.max_g);
      a.notes.push_back(buf);
      continue;
    }
    moe.insert(moe.end(), r.points.begin(), r.points.end());
    by_g[r.G].insert(by_g[r.G].end(), r.points.begin(), r.points.end());
  }
  if (!o.quiet)
    for (const auto& n : a.notes) std::fprintf(out, "  not in the MoE fit: %s\n", n.c_str());

  if (!o.runs_dir.empty()) {
    if (!moe.empty() || dense.empty()) {
      FitOptions fo = o.fit;
      fo.form = o.form == "fine" ? LawForm::Fine
                : o.form == "chinchilla" ? LawForm::Chinchilla
                : by_g.size() >= 2 ? LawForm::Fine : LawForm::Chinchilla;
      a.fits.push_back(make_fit("moe", moe, fo, o));
    }
    if (!dense.empty()) {
      FitOptions fo = o.fit;
      fo.form = LawForm::Chinchilla;
      a.fits.push_back(make_fit("dense", dense, fo, o));
    }
    if (o.slice_g)
      for (const auto& [G, pts] : by_g) {
        FitOptions fo = o.fit;
        fo.form = LawForm::Chinchilla;
        char label[32];
        std::snprintf(label, sizeof label, "G=%g", G);
        a.fits.push_back(make_fit(label, pts, fo, o));
      }
    for (const auto& f : a.fits) print_fit(out, f);
  }

  // Optimal allocation: with a given law, or the fitted MoE law.
  OptimalReport& op = a.optimal;
  op.options = o.opt;
  bool have_law = false;
  if (o.law == "fit") {
    for (const auto& f : a.fits)
      if (f.label == "moe" && f.fit.ok) {
        op.law = f.fit.law;
        op.law_name = "fit";
        op.options.E = E > 0 ? E : 64;
        have_law = true;
      }
  } else {
    op.law = parse_law(o.law, "--law");
    op.law_name = o.law;
    op.options.E = o.expansion > 0 ? o.expansion : 64;
    have_law = true;
  }
  if (o.dense_law == "paper") {
    op.dense = paper_dense_law(), op.has_dense = true, op.dense_name = "paper";
  } else if (o.dense_law == "fit") {
    for (const auto& f : a.fits)
      if (f.label == "dense" && f.fit.ok) op.dense = f.fit.law, op.has_dense = true, op.dense_name = "fit";
    if (!op.has_dense && !o.quiet) std::fprintf(out, "no dense fit: compute multiplier not reported\n");
  } else if (o.dense_law != "none") {
    op.dense = parse_law(o.dense_law, "--dense-law");
    op.has_dense = true;
    op.dense_name = o.dense_law;
  }
  if (have_law && (!o.optimal.empty() || o.law == "fit")) {
    const auto budgets = parse_budgets(o.optimal.empty() ? "log:1e18:1e25:8" : o.optimal);
    for (double F : budgets) op.rows.push_back(optimal_for_budget(op.law, F, op.options, op.has_dense ? &op.dense : nullptr));
    op.present = true;
    {
      std::fprintf(out, "compute-optimal (law %s, E = %g, d_model = %g*n_blocks):\n", op.law_name.c_str(),
                   op.options.E, op.options.aspect);
      std::fprintf(out, "  %-9s %8s %8s %10s %10s %4s %10s %8s %7s %9s\n", "budget", "n_blocks", "d_model",
                   "N_active", "N_total", "G", "D", "D/N_act", "loss", "x_dense");
      for (const auto& r : op.rows) {
        const auto& b = r.best;
        std::fprintf(out, "  %-9.3g %8.2f %8.1f %10.4g %10.4g %4g %10.4g %8.2f %7.4f %9.3g%s\n", b.budget, b.n_blocks,
                     b.d_model, b.N_active, b.N_total, b.G, b.D, b.tokens_per_active, b.loss, r.multiplier,
                     b.at_range_edge ? "  (at search edge)" : "");
      }
    }
  } else if (!o.optimal.empty() && !have_law && !o.quiet) {
    std::fprintf(out, "no optimal table: no fitted MoE law (use --law paper or coefficients)\n");
  }
  return a;
}

int analyze_main(int argc, const char* const* argv) {
  AnalyzeOptions o;
  try {
    std::string help;
    if (!parse_analyze_args(argc, argv, o, help)) {
      std::printf("%s\n", help.c_str());
      return kExitOk;
    }
    Analysis a = run_analysis(o);
    bool fitted = false;
    for (const auto& f : a.fits) fitted = fitted || f.fit.ok;
    const bool given_law_table = a.optimal.present && o.law != "fit";
    write_outputs(a);
    if (o.json) std::fputs(fit_json(a).c_str(), stdout);
    if (!fitted && !given_law_table) {
      std::string why;
      if (a.runs.runs.empty())
      {
        why = a.runs.skipped.empty() ? "no metrics.h5 found under '" + o.runs_dir + "'"
                                     : "none of the " + std::to_string(a.runs.skipped.size()) +
                                           " metrics.h5 files is usable (reasons in report.md):";
        // Name the files: under -q the per-file lines above are not printed.
        const size_t shown = std::min<size_t>(a.runs.skipped.size(), 20);
        for (size_t i = 0; i < shown; ++i) why += " " + a.runs.skipped[i].path;
        if (shown < a.runs.skipped.size()) why += " and " + std::to_string(a.runs.skipped.size() - shown) + " more";
      }
      else
        for (const auto& f : a.fits) why += (why.empty() ? "" : "; ") + f.label + ": " + f.fit.message;
      std::fprintf(stderr, "moe-analyze: nothing could be fitted: %s\n", why.c_str());
      return kExitDataError;
    }
    if (!o.quiet) std::fprintf(human(o), "outputs written to %s\n", o.out_dir.c_str());
    return kExitOk;
  } catch (const Error& e) {
    std::fprintf(stderr, "moe-analyze: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-analyze: %s\n", e.what());
    return kExitFailure;
  }
}

}  // namespace finemoe::analysis
