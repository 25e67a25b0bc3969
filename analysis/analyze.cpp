// The moe-analyze driver: collect runs → fits (+ bootstrap, holdout) →
// optimal allocation → outputs. Human-readable progress goes to stdout, or to
// stderr under --json (stdout is then the JSON alone).
#include "analyze.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "finemoe/error.hpp"
#include "points.hpp"

namespace finemoe::analysis {
namespace {

FILE* human(const AnalyzeOptions& o) { return o.json ? stderr : stdout; }

std::string fmt_g(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", x);
  return b;
}

FitReport make_fit(const std::string& label, std::vector<FitPoint> pts, FitOptions fo, const AnalyzeOptions& o,
                   double entropy_rate) {
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
  r.guard = check_fit(r.points, fo, r.fit, r.has_bootstrap ? &r.boot : nullptr, entropy_rate);
  return r;
}

void print_g_profile(FILE* f, const GProfile& g) {
  if (!g.ok) {
    std::fprintf(f, "G profile (gamma at fixed N, D): not fitted: %s\n", g.message.c_str());
    return;
  }
  std::fprintf(f, "G profile (gamma at fixed N, D; %d cells, %d points): gamma = %.4g", g.cells, g.points, g.gamma);
  if (g.has_interval) std::fprintf(f, "  95%% [%.4g, %.4g]", g.interval.lo, g.interval.hi);
  std::fprintf(f, "  (%s)\n", g.verdict.c_str());
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
    else if (names[k] == "gamma" && r.options.fix_gamma && !r.options.gamma_from_profile) std::fprintf(f, " (fixed)");
    else if (r.has_bootstrap && r.boot.succeeded > 1)
      std::fprintf(f, " 95%% [%.5g, %.5g]", r.boot.intervals[k].lo, r.boot.intervals[k].hi);
    for (const auto& fl : r.guard.flags)
      if (fl.param == names[k]) std::fprintf(f, "  [%s]", fl.kind.c_str());
    std::fprintf(f, "\n");
  }
  if (r.has_bootstrap)
    std::fprintf(f, "    bootstrap: %d/%d refits succeeded\n", r.boot.succeeded, r.boot.requested);
  if (r.guard.flags.empty())
    std::fprintf(f, "    guardrails: no flags (solver bounds, L2 prior%s%s)\n", r.has_bootstrap ? ", bootstrap widths" : "",
                 ", entropy floor where known");
  for (const auto& fl : r.guard.flags) std::fprintf(f, "    FLAG %s: %s\n", fl.kind.c_str(), fl.message.c_str());
  for (const auto& sg : r.guard.suggestions) std::fprintf(f, "    to identify: %s\n", sg.c_str());
  if (r.has_holdout) {
    if (r.holdout.ok)
      std::fprintf(f, "    holdout %s: %d runs held out, RMSE %.4g nats, MARE %.3g%%\n", r.holdout.rule.c_str(),
                   r.holdout.test_runs, r.holdout.rmse, 100 * r.holdout.mare);
    else
      std::fprintf(f, "    holdout %s: %s\n", r.holdout.rule.c_str(), r.holdout.message.c_str());
  }
}

// The one line on the MoE runs of the other routing: how many, why they are
// not fitted, and whether the comparison table has them.
std::string routing_note(const Analysis& a) {
  const bool other_tc = a.routing == kExpertChoice;
  const std::string other = other_tc ? "token-choice" : "expert-choice";
  const std::string fitted = other_tc ? "expert-choice" : "token-choice";
  std::set<std::string> compared;
  for (const auto& row : a.routing_cmp.rows)
    for (const auto& n : (other_tc ? row.tc : row.ec).names) compared.insert(n);
  const int n = a.routing_excluded, k = int(compared.size());
  std::string s = std::to_string(n) + " " + other + " run" + (n == 1 ? "" : "s");
  if (k == n) s += std::string(n == 1 ? " is" : " are") + " compared below, not fitted: the law is fitted per routing";
  else
    s += " not fitted (the law is fitted per routing); " + std::to_string(k) + " of them " + (k == 1 ? "is" : "are") +
         " compared below with " + fitted + " runs of the same (E, size, D, G)";
  const std::string other_name = other_tc ? kTokenChoice : kExpertChoice;
  s += " (fitted: " + a.routing +
       (a.routing_chosen_by == "majority" ? ", the routing of most MoE runs; --routing " + other_name + " fits the others"
                                          : ", chosen with --routing") +
       ")";
  return s;
}

// The MoE law: its G profile first (fine form), then the fit, with gamma held
// at the profile under --fix-gamma profile (g_profile.hpp). Sets a.g_profile
// and a.gamma_note.
FitReport fit_moe_law(Analysis& a, const std::vector<FitPoint>& moe, FitOptions fo, const AnalyzeOptions& o,
                      double entropy, FILE* out) {
  if (fo.form == LawForm::Fine) {
    BootstrapOptions bo = o.boot;
    bo.progress = false;
    a.g_profile = fit_g_profile(moe, bo);
    a.has_g_profile = true;
  }
  if ((o.fix_gamma_profile || o.fit.fix_gamma) && fo.form != LawForm::Fine) {
    a.gamma_note = "--fix-gamma has no effect: the MoE fit is the Chinchilla form (no granularity term; one G, or --form chinchilla)";
    if (!o.quiet) std::fprintf(out, "%s\n", a.gamma_note.c_str());
  }
  if (o.fix_gamma_profile && fo.form == LawForm::Fine && !a.g_profile.ok) {
    FitReport r;
    r.label = "moe";
    r.options = fo;
    r.points = moe;
    r.fit.message = "--fix-gamma profile: " + a.g_profile.message;
    return r;
  }
  if (o.fix_gamma_profile && fo.form == LawForm::Fine) {
    fo.fix_gamma = fo.gamma_from_profile = true;
    fo.gamma_value = a.g_profile.gamma;
    fo.gamma_replicates = a.g_profile.replicate_gamma;
    a.gamma_note = "gamma fixed at the G profile's gamma = " + fmt_g(a.g_profile.gamma) +
                   " (--fix-gamma profile; loss vs G at fixed N and D, section below); bootstrap replicate i "
                   "holds it at the profile's replicate i, the holdout at its training runs' profile, so its "
                   "interval is the profile's";
    if (!o.quiet) std::fprintf(out, "%s\n", a.gamma_note.c_str());
  } else if (fo.fix_gamma && fo.form == LawForm::Fine) {
    a.gamma_note = "gamma fixed at " + fmt_g(fo.gamma_value) + " (--fix-gamma), not fitted";
    if (!o.quiet) std::fprintf(out, "%s\n", a.gamma_note.c_str());
  }
  FitReport f = make_fit("moe", moe, fo, o, entropy);
  bool gamma_flagged = false;
  for (const auto& fl : f.guard.flags) gamma_flagged = gamma_flagged || fl.param == "gamma";
  if (gamma_flagged && a.g_profile.identified && !fo.fix_gamma)
    f.guard.suggestions.push_back("`--fix-gamma profile`: these runs identify gamma from loss vs G at fixed N "
                                  "and D (gamma = " + fmt_g(a.g_profile.gamma) +
                                  ", section 'gamma from the G profile'); the law's other coefficients are "
                                  "then fitted with it held");
  if (fo.gamma_from_profile && f.fit.ok && !a.g_profile.identified)
    f.guard.flags.push_back({"not_identified", "gamma",
                             "gamma is fixed at the G profile's value, which these runs do not place: " +
                                 a.g_profile.verdict});
  return f;
}

}  // namespace

Analysis run_analysis(const AnalyzeOptions& o) {
  Analysis a;
  a.options = o;
  FILE* out = human(o);
  const bool have_runs = !o.runs_dir.empty() || !o.points.empty();
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
  }
  if (!o.points.empty()) {
    RunSet p = read_points_csv(o.points);
    if (!o.quiet) std::fprintf(out, "points: %zu runs from %s\n", p.runs.size(), o.points.c_str());
    append_runs(a.runs, std::move(p));
  }
  if (!o.quiet) {
    size_t from_eval = 0;
    for (const auto& r : a.runs.runs) from_eval += r.final_source == "eval";
    if (!o.runs_dir.empty())
      std::fprintf(out, "final losses: %zu of %zu runs from their final evaluation on the fixed held-out set%s\n",
                   from_eval, a.runs.runs.size(),
                   o.collect.final_from_eval ? "" : " (--final-loss train: train window for all)");
    for (const auto& r : a.runs.runs)
      if (!r.warning.empty()) std::fprintf(out, "  warning: %s: %s\n", r.name.c_str(), r.warning.c_str());
  }
  const double entropy = a.runs.mean_entropy_rate();
  if (!o.quiet && std::isfinite(entropy))
    std::fprintf(out, "data entropy rate (true irreducible loss, compare with the fitted c): %.4f nats/token\n", entropy);
  if (!o.write_points.empty()) {
    write_points_csv(a.runs, o.write_points);
    if (!o.quiet) std::fprintf(out, "fit points written to %s\n", o.write_points.c_str());
  }
  AnalyzeOptions oc = o;  // o with c fixed at the floor under --fix-c entropy
  if (o.fix_c_entropy) {
    if (!std::isfinite(entropy))
      throw ConfigError("--fix-c entropy: no run carries data_entropy_rate (shard data or --points); give a value");
    oc.fit.fix_c = true;
    oc.fit.c_value = entropy;
    char b[256];
    std::snprintf(b, sizeof b,
                  "c fixed at the data's entropy rate %.4f nats/token (--fix-c entropy); the gap a finite context "
                  "window adds above it is not estimated and not included",
                  entropy);
    a.c_note = b;
    if (!o.quiet) std::fprintf(out, "%s\n", b);
  }

  // The MoE law is fitted per routing: --routing, else the majority's (ties: expert choice).
  for (const auto& r : a.runs.runs)
    if (!r.dense) a.routing_counts[r.routing]++;
  if (!a.routing_counts.empty()) {
    if (!o.routing.empty()) {
      if (!a.routing_counts.count(o.routing)) {
        std::string have;
        for (const auto& [name, n] : a.routing_counts) have += (have.empty() ? "" : ", ") + std::to_string(n) + " " + name;
        throw ConfigError("--routing " + o.routing + ": no MoE run uses it (MoE runs: " + have + ")");
      }
      a.routing = o.routing;
      a.routing_chosen_by = "--routing";
    } else {
      const int ec = a.routing_counts.count(kExpertChoice) ? a.routing_counts.at(kExpertChoice) : 0;
      const int tc = a.routing_counts.count(kTokenChoice) ? a.routing_counts.at(kTokenChoice) : 0;
      a.routing = tc > ec ? kTokenChoice : kExpertChoice;
      a.routing_chosen_by = "majority";
    }
  }

  // Split the runs: dense ones, MoE ones of the fitted routing and the chosen E (and G <= max_g).
  std::map<double, int> e_count;
  for (const auto& r : a.runs.runs)
    if (!r.dense && r.routing == a.routing) e_count[r.E]++;
  double E = o.expansion;
  if (E == 0 && !e_count.empty())
    E = std::max_element(e_count.begin(), e_count.end(), [](auto& x, auto& y) { return x.second < y.second; })->first;
  std::vector<FitPoint> moe, dense;
  std::vector<int> moe_runs;  // indices of the runs in the MoE fit
  std::map<double, std::vector<FitPoint>> by_g;
  for (size_t i = 0; i < a.runs.runs.size(); ++i) {
    const auto& r = a.runs.runs[i];
    char buf[512];
    if (r.dense) {
      dense.insert(dense.end(), r.points.begin(), r.points.end());
      continue;
    }
    if (r.routing != a.routing) {
      ++a.routing_excluded;  // one summary line below, not one per run
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
    moe_runs.push_back(int(i));
  }
  a.routing_cmp = compare_routing(a.runs);
  a.loss_vs_g = loss_vs_g(a.runs, moe_runs);
  a.loss_vs_g_iso = loss_vs_g_iso_flops(a.runs, moe_runs);
  if (a.routing_excluded > 0) a.routing_note = routing_note(a);
  if (!o.quiet)
    for (const auto& n : a.notes) std::fprintf(out, "  not in the MoE fit: %s\n", n.c_str());
  if (!a.routing_note.empty()) std::fprintf(out, "%s\n", a.routing_note.c_str());

  if (have_runs) {
    if (!moe.empty() || dense.empty()) {
      FitOptions fo = oc.fit;
      fo.form = o.form == "fine" ? LawForm::Fine
                : o.form == "chinchilla" ? LawForm::Chinchilla
                : by_g.size() >= 2 ? LawForm::Fine : LawForm::Chinchilla;
      a.fits.push_back(fit_moe_law(a, moe, fo, o, entropy, out));
    }
    if (!dense.empty()) {
      FitOptions fo = oc.fit;
      fo.form = LawForm::Chinchilla;
      a.fits.push_back(make_fit("dense", dense, fo, o, entropy));
    }
    if (o.slice_g)
      for (const auto& [G, pts] : by_g) {
        FitOptions fo = oc.fit;
        fo.form = LawForm::Chinchilla;
        char label[32];
        std::snprintf(label, sizeof label, "G=%g", G);
        a.fits.push_back(make_fit(label, pts, fo, o, entropy));
      }
    for (const auto& f : a.fits) print_fit(out, f);
    if (a.has_g_profile) print_g_profile(out, a.g_profile);
    print_routing_comparison(out, a.routing_cmp);
    print_loss_vs_g(out, a.loss_vs_g, a.routing);
    print_loss_vs_g_iso(out, a.loss_vs_g_iso, a.routing);
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
        // The optimal shapes follow the runs' own d_model/n_blocks when they
        // all share one (a sweep's aspect_ratio), unless --aspect says otherwise.
        if (!o.aspect_given) {
          double ratio = 0;
          bool common = !moe_runs.empty();
          for (int i : moe_runs) {
            const auto& r = a.runs.runs[size_t(i)];
            const double x = r.n_blocks > 0 ? r.d_model / r.n_blocks : 0;
            if (!(x > 0) || (ratio > 0 && std::fabs(x - ratio) > 1e-9 * ratio)) common = false;
            ratio = x;
          }
          if (common) op.options.aspect = ratio;
        }
        have_law = true;
      }
  } else {
    op.law = parse_law(o.law, "--law");
    op.law_name = o.law;
    op.options.E = o.expansion > 0 ? o.expansion : 64;
    have_law = true;
  }
  // Dense comparison: only against dense runs of the same data unless asked.
  const bool paper_moe = o.law == "paper" || o.law == "paper-rounded";
  bool dense_fit_ok = false;
  for (const auto& f : a.fits)
    if (f.label == "dense" && f.fit.ok) op.dense = f.fit.law, dense_fit_ok = true;
  if (o.dense_law == "fit" || (o.dense_law == "auto" && dense_fit_ok)) {
    op.has_dense = dense_fit_ok;
    op.dense_name = "fit";
    op.dense_note = dense_fit_ok ? "against the dense law fitted on this analysis' dense runs (the same data)"
                                 : "no compute multiplier: --dense-law fit, but no dense law could be fitted";
  } else if (o.dense_law == "paper" || (o.dense_law == "auto" && paper_moe)) {
    op.dense = paper_dense_law(), op.has_dense = true, op.dense_name = "paper";
    op.dense_note = paper_moe ? "against the paper's dense law (web text, the corpus of the paper's MoE law)"
                              : "against the paper's dense law for web text (c = 0.47): ANOTHER CORPUS than these "
                                "runs, so the multiplier mixes two data sets (asked for with --dense-law paper)";
  } else if (o.dense_law == "auto" || o.dense_law == "none") {
    op.dense_note = o.dense_law == "none" ? "no compute multiplier (--dense-law none)"
                                          : "no compute multiplier: no dense runs of the same data to fit a dense law "
                                            "on (add dense runs, or --dense-law paper to compare with another corpus)";
  } else {
    op.dense = parse_law(o.dense_law, "--dense-law");
    op.has_dense = true;
    op.dense_name = o.dense_law;
    op.dense_note = "against the dense law given with --dense-law";
  }
  if (!op.has_dense) op.dense = Law{};
  {
    // The table and the multipliers are functions of the fitted laws: a flag
    // on a coefficient there is a flag on every number computed from it.
    auto flagged = [&](const char* label, bool used) -> std::string {
      if (!used) return "";
      for (const auto& f : a.fits)
        if (f.label == label && f.fit.ok && !f.guard.flags.empty()) {
          std::set<std::string> params;
          for (const auto& fl : f.guard.flags) params.insert(fl.param);
          std::string list;
          for (const auto& p : params) list += (list.empty() ? "" : ", ") + p;
          return std::string("the ") + label + " fit has flagged coefficients (" + list + ")";
        }
      return "";
    };
    const std::string moe_f = flagged("moe", op.law_name == "fit");
    const std::string dense_f = flagged("dense", op.has_dense && op.dense_name == "fit");
    if (!moe_f.empty() || !dense_f.empty())
      op.flags_note = moe_f + (!moe_f.empty() && !dense_f.empty() ? " and " : "") + dense_f +
                      ": the optimal configurations, losses and multipliers below inherit those flags and are not "
                      "supported by these runs";
  }
  if (!o.quiet && have_law) {
    std::fprintf(out, "dense comparison: %s\n", op.dense_note.c_str());
    if (!op.flags_note.empty()) std::fprintf(out, "WARNING: %s\n", op.flags_note.c_str());
  }
  // The range of the fitted runs (main MoE fit's points).
  for (const auto& f : a.fits)
    if (f.label == "moe" && f.fit.ok && !f.points.empty()) {
      op.has_range = true;
      op.F_min = 1e300;
      for (const auto& p : f.points) {
        if (p.F > 0) op.F_min = std::min(op.F_min, p.F), op.F_max = std::max(op.F_max, p.F);
        op.N_max = std::max(op.N_max, p.N), op.D_max = std::max(op.D_max, p.D);
      }
      if (!(op.F_max > 0)) op.has_range = false;
    }
  if (have_law && (!o.optimal.empty() || o.law == "fit")) {
    std::string spec = o.optimal;
    if (spec.empty()) {
      char b[128];
      if (op.has_range) std::snprintf(b, sizeof b, "log:%.17g:%.17g:8", op.F_min, 10 * op.F_max);
      else std::snprintf(b, sizeof b, "log:1e18:1e25:8");
      spec = b;
    }
    const auto budgets = parse_budgets(spec);
    for (double F : budgets) {
      OptimalRow row = optimal_for_budget(op.law, F, op.options, op.has_dense ? &op.dense : nullptr);
      if (op.has_range) {
        // "F 12x, N 15x": what of (F, N, D) lies more than 10x beyond the fitted runs.
        auto beyond = [&](const OptimalPoint& p) {
          char b[160] = "";
          auto add = [&](const char* what, double x, double mx) {
            if (x > 10 * (1 + 1e-6) * mx) std::snprintf(b + std::strlen(b), sizeof b - std::strlen(b), "%s%s %.3gx", b[0] ? ", " : "", what, x / mx);
          };
          add("F", F, op.F_max);
          add("N", p.N_total, op.N_max);
          add("D", p.D, op.D_max);
          return std::string(b);
        };
        row.extrapolated_why = beyond(row.best);
        row.extrapolated = !row.extrapolated_why.empty();
        // The G = 1 multiplier rests on the G = 1 optimum, whose N and D differ.
        for (const auto& p : row.per_g)
          if (p.G == 1) row.extrapolated_g1_why = beyond(p);
        row.extrapolated_g1 = !row.extrapolated_g1_why.empty();
      }
      op.rows.push_back(row);
    }
    op.present = true;
    {
      std::fprintf(out, "compute-optimal (law %s, E = %g, d_model = %g*n_blocks):\n", op.law_name.c_str(),
                   op.options.E, op.options.aspect);
      if (op.has_range)
        std::fprintf(out, "  fitted runs reach F %.3g, N %.3g, D %.3g; rows beyond 10x of any are marked EXTRAPOLATED\n",
                     op.F_max, op.N_max, op.D_max);
      std::fprintf(out, "  %-9s %8s %8s %10s %10s %4s %10s %8s %7s %9s %9s\n", "budget", "n_blocks", "d_model",
                   "N_active", "N_total", "G", "D", "D/N_act", "loss", "x_dense", "x_dns_G1");
      for (const auto& r : op.rows) {
        const auto& b = r.best;
        std::fprintf(out, "  %-9.3g %8.2f %8.1f %10.4g %10.4g %4g %10.4g %8.2f %7.4f %9.3g %9.3g%s%s\n", b.budget,
                     b.n_blocks, b.d_model, b.N_active, b.N_total, b.G, b.D, b.tokens_per_active, b.loss,
                     op.has_dense ? r.multiplier : NAN, op.has_dense ? r.multiplier_g1 : NAN,
                     b.at_range_edge ? "  (at search edge)" : "",
                     r.extrapolated ? ("  EXTRAPOLATED (" + r.extrapolated_why + " beyond the runs)").c_str() : "");
        if (r.extrapolated_g1 && r.extrapolated_g1_why != r.extrapolated_why)
          std::fprintf(out, "  %-9s G = 1 optimum (x_dns_G1): EXTRAPOLATED (%s beyond the runs)\n", "",
                       r.extrapolated_g1_why.c_str());
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
