// fit.json, runs.csv, optimal.csv and report.md.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analyze.hpp"
#include "finemoe/error.hpp"
#include "json.hpp"

namespace fs = std::filesystem;

namespace finemoe::analysis {
namespace {

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p);
  if (!f) throw Error("cannot write '" + p.string() + "'");
  f << text;
  if (!f) throw Error("error writing '" + p.string() + "'");
}

void json_law(JsonWriter& w, const std::string& key, const Law& l, bool granular) {
  w.begin_object(key);
  const auto names = law_param_names();
  const auto vals = law_values(l);
  for (size_t k = 0; k < names.size(); ++k)
    if (granular || (names[k] != "g" && names[k] != "gamma")) w.num(names[k], vals[k]);
  w.end_object();
}

std::string run_name(const Analysis& a, int group) {
  return group >= 0 && size_t(group) < a.runs.runs.size() ? a.runs.runs[group].name : std::to_string(group);
}

void json_fit(JsonWriter& w, const Analysis& a, const FitReport& r) {
  const bool fine = r.options.form == LawForm::Fine;
  w.begin_object();
  w.str("label", r.label).str("form", form_name(r.options.form)).boolean("ok", r.fit.ok);
  if (!r.fit.ok) w.str("message", r.fit.message);
  w.str("solver", solver_name(r.options.solver))
      .num("huber_delta", r.options.huber_delta)
      .num("l2", r.options.l2)
      .boolean("c_fixed", r.options.fix_c)
      .str("gamma_fixed", !r.options.fix_gamma ? "no" : r.options.gamma_from_profile ? "profile" : "value")
      .num("points", double(r.points.size()));
  if (r.fit.ok) {
    json_law(w, "coefficients", r.fit.law, fine);
    w.num("objective", r.fit.objective).num("rmse", r.fit.rmse).num("rmse_log", r.fit.rmse_log).num("mare", r.fit.mare);
    w.num("starts", r.fit.starts).num("usable_starts", r.fit.usable_starts);
  }
  if (r.has_bootstrap) {
    w.begin_object("bootstrap");
    w.num("replicates", r.boot.requested).num("succeeded", r.boot.succeeded);
    w.num("fraction", a.options.boot.fraction).str("resampling", "runs with replacement");
    w.begin_object("intervals_95");
    for (const auto& pi : r.boot.intervals) {
      if (!fine && (pi.name == "g" || pi.name == "gamma")) continue;
      w.begin_object(pi.name).num("lo", pi.lo).num("hi", pi.hi).num("median", pi.median).num("sd", pi.sd).end_object();
    }
    w.end_object().end_object();
  }
  if (r.fit.ok) {
    w.boolean("flagged", !r.guard.flags.empty());
    w.begin_array("flags");
    for (const auto& f : r.guard.flags)
      w.begin_object().str("kind", f.kind).str("param", f.param).str("message", f.message).end_object();
    w.end_array();
    w.begin_array("suggestions");
    for (const auto& sg : r.guard.suggestions) w.str(sg);
    w.end_array();
    if (r.guard.prior_checked) json_law(w, "coefficients_without_prior", r.guard.no_prior.law, fine);
  }
  if (r.has_holdout) {
    const auto& h = r.holdout;
    w.begin_object("holdout").str("rule", h.rule).boolean("ok", h.ok);
    if (!h.ok) w.str("message", h.message);
    w.num("train_runs", h.train_runs).num("test_runs", h.test_runs);
    if (h.ok) {
      w.num("rmse", h.rmse).num("mare", h.mare).num("train_rmse", h.train_fit.rmse);
      json_law(w, "train_coefficients", h.train_fit.law, fine);
      w.begin_array("test");
      for (size_t i = 0; i < h.test_points.size(); ++i) {
        const auto& p = h.test_points[i];
        w.begin_object().str("run", run_name(a, p.group)).num("N", p.N).num("D", p.D).num("G", p.G);
        w.num("observed", p.loss).num("predicted", h.test_predicted[i]).end_object();
      }
      w.end_array();
    }
    w.end_object();
  }
  if (r.fit.ok) {
    w.begin_array("residuals");
    for (size_t i = 0; i < r.points.size(); ++i) {
      const auto& p = r.points[i];
      const double pred = r.fit.predicted[i];
      w.begin_object().str("run", run_name(a, p.group)).num("N", p.N).num("D", p.D).num("G", p.G);
      w.num("observed", p.loss).num("predicted", pred).num("residual", pred - p.loss);
      w.num("log_residual", std::log(pred) - std::log(p.loss)).end_object();
    }
    w.end_array();
  }
  w.end_object();
}

// report.md's section on the G profile (g_profile.hpp), compared with the law's γ.
std::string g_profile_md(const Analysis& a) {
  if (!a.has_g_profile) return "";
  const GProfile& g = a.g_profile;
  std::ostringstream os;
  char buf[512];
  os << "## gamma from the G profile (loss vs G at fixed N and D)\n\n"
     << "The law's gamma rests on how N, D and G enter together. This fit reads gamma from the shape of loss vs G "
        "inside each cell of runs with the same N and D: log L = m_cell + s_cell·G^(−gamma), an offset and an "
        "amplitude per cell and one gamma for all, least squares on log loss. It needs no form for N and D.\n\n";
  if (!g.ok) {
    os << "Not fitted: " << g.message << ".\n\n";
    return os.str();
  }
  std::snprintf(buf, sizeof buf,
                "%d cells, %d points from %d runs: **gamma = %.4g**", g.cells, g.points, g.runs, g.gamma);
  os << buf;
  if (g.has_interval) {
    std::snprintf(buf, sizeof buf, ", 95%% interval [%.4g, %.4g] (%d/%d refits on resampled cells: a cluster bootstrap, see docs/analysis.md)",
                  g.interval.lo, g.interval.hi, g.succeeded, g.replicates);
    os << buf;
  }
  std::snprintf(buf, sizeof buf,
                "; RMSE %.3g on log loss; mean fitted drop of log loss from a cell's smallest to its largest G: %.3g.\n\n",
                g.rmse_log, g.mean_gain);
  std::string verdict = g.verdict;
  if (!verdict.empty()) verdict[0] = char(std::toupper(static_cast<unsigned char>(verdict[0])));
  os << buf << (g.identified ? "" : "**") << verdict << (g.identified ? "" : "**") << ".\n\n";
  for (const auto& f : a.fits) {
    if (f.label != "moe" || !f.fit.ok) continue;
    if (f.options.gamma_from_profile) {
      os << "The law's fit holds gamma at this value (--fix-gamma profile).\n\n";
      continue;
    }
    bool law_flagged = false;
    for (const auto& fl : f.guard.flags) law_flagged = law_flagged || fl.param == "gamma";
    std::snprintf(buf, sizeof buf, "The law's fit gives gamma = %.4g%s.", f.fit.law.gamma,
                  law_flagged ? " (flagged above)" : "");
    os << buf;
    if (law_flagged && g.identified)
      os << " The runs do show how the gain of G decays with G (this profile); what they cannot place is how "
            "that gain scales with N and D, which the law ties to N^(−alpha) through g and a.";
    else if (!law_flagged && g.identified && g.has_interval && !(f.fit.law.gamma >= g.interval.lo && f.fit.law.gamma <= g.interval.hi))
      os << " **The law's gamma lies outside the profile's interval**: the law's form for N and D pulls gamma away "
            "from the within-cell shape.";
    os << "\n\n";
  }
  return os.str();
}

void json_g_profile(JsonWriter& w, const Analysis& a) {
  if (!a.has_g_profile) return;
  const GProfile& g = a.g_profile;
  w.begin_object("g_profile").boolean("ok", g.ok).str("message", g.message);
  w.num("cells", g.cells).num("points", g.points).num("runs", g.runs);
  w.num("gamma", g.ok ? g.gamma : NAN).num("rmse_log", g.ok ? g.rmse_log : NAN).num("mean_gain_log", g.ok ? g.mean_gain : NAN);
  w.boolean("on_bound", g.on_bound).boolean("has_interval", g.has_interval);
  w.num("replicates", g.replicates).num("succeeded", g.succeeded);
  w.num("lo", g.has_interval ? g.interval.lo : NAN).num("hi", g.has_interval ? g.interval.hi : NAN);
  w.num("median", g.has_interval ? g.interval.median : NAN).num("bimodality", g.bimodality);
  w.boolean("identified", g.identified).str("verdict", g.verdict).end_object();
}

std::string runs_csv(const Analysis& a) {
  std::ostringstream os;
  os.precision(10);
  os << "name,path,status,d_model,n_blocks,E,G,dense,cooldown_branch,N,N_active,D,flops_per_token,F,final_loss,"
        "window,rows,final_source,final_stderr,routing\n";
  for (const auto& r : a.runs.runs)
    os << r.name << ',' << r.path << ',' << r.status << ',' << r.d_model << ',' << r.n_blocks << ',' << r.E << ','
       << r.G << ',' << int(r.dense) << ',' << int(r.cooldown) << ',' << r.N << ',' << r.N_active << ',' << r.D
       << ',' << r.flops_per_token << ',' << r.F << ',' << r.final_loss << ',' << r.window << ',' << r.rows << ',' << r.final_source << ','
       << r.final_stderr << ',' << r.routing << '\n';
  return os.str();
}

std::string optimal_csv(const Analysis& a) {
  std::ostringstream os;
  os.precision(10);
  os << "budget,n_blocks,d_model,N_active,N_total,G,D,tokens_per_active_param,loss,dense_optimal_loss,"
        "dense_compute_to_match,compute_multiplier,compute_multiplier_g1,extrapolated,extrapolated_by,extrapolated_g1,extrapolated_g1_by\n";
  for (const auto& r : a.optimal.rows) {
    const auto& b = r.best;
    os << b.budget << ',' << b.n_blocks << ',' << b.d_model << ',' << b.N_active << ',' << b.N_total << ',' << b.G
       << ',' << b.D << ',' << b.tokens_per_active << ',' << b.loss << ',';
    if (a.optimal.has_dense) os << r.dense_loss << ',' << r.dense_compute << ',' << r.multiplier << ',' << r.multiplier_g1;
    else os << ",,,";
    os << ',' << int(r.extrapolated) << ',' << r.extrapolated_why << ',' << int(r.extrapolated_g1) << ','
       << r.extrapolated_g1_why << '\n';
  }
  return os.str();
}

std::string report_md(const Analysis& a, const std::vector<std::string>& plots) {
  std::ostringstream os;
  char buf[512];
  os << "# moe-analyze report\n\n";
  if (!a.options.runs_dir.empty()) {
    os << "Runs directory: `" << a.options.runs_dir << "` — " << a.runs.runs.size() << " usable runs, "
       << a.runs.skipped.size() << " skipped. Per-run values: [runs.csv](runs.csv); everything: [fit.json](fit.json).\n\n";
    if (std::isfinite(a.runs.mean_entropy_rate()))
      os << "Entropy rate of the runs' data (the true irreducible loss; compare with the fitted c): "
         << a.runs.mean_entropy_rate() << " nats/token.\n\n";
    if (!a.runs.skipped.empty()) {
      os << "Skipped:\n\n";
      for (const auto& s : a.runs.skipped) os << "- `" << s.path << "`: " << s.reason << "\n";
      os << "\n";
    }
    for (const auto& n : a.notes) os << "- not in the MoE fit: " << n << "\n";
    if (!a.notes.empty()) os << "\n";
  }
  if (!a.options.points.empty()) os << "Points file: `" << a.options.points << "`.\n\n";
  if (!a.routing.empty()) {
    os << "Routing of the MoE fit: `" << a.routing << "` ("
       << (a.routing_chosen_by == "--routing" ? "chosen with `--routing`" : "the routing of most MoE runs") << "; MoE runs:";
    const char* sep = " ";
    for (const auto& [name, n] : a.routing_counts) os << sep << n << " " << name, sep = ", ";
    os << ").";
    if (!a.routing_note.empty()) os << " **" << a.routing_note << ".**";
    os << "\n\n";
  }
  if (!a.runs.runs.empty()) {
    size_t from_eval = 0, warned = 0;
    for (const auto& r : a.runs.runs) from_eval += r.final_source == "eval", warned += !r.warning.empty();
    os << "Final losses: " << from_eval << " of " << a.runs.runs.size()
       << " runs from their final evaluation on the fixed held-out set (`train.final_eval_tokens`)";
    os << (a.options.collect.final_from_eval ? "" : " (`--final-loss train`: the train window for every run)") << ".";
    if (warned) {
      os << " **Warning**, " << warned << " run(s) fall back to the mean of their last train-batch losses "
         << "(single-batch noise):\n\n";
      for (const auto& r : a.runs.runs)
        if (!r.warning.empty()) os << "- `" << r.name << "`: " << r.warning << "\n";
    }
    os << "\n\n";
  }
  if (!a.c_note.empty()) os << a.c_note << ".\n\n";
  if (!a.gamma_note.empty()) os << a.gamma_note << ".\n\n";
  for (const auto& f : a.fits) {
    os << "## Fit `" << f.label << "` (" << form_name(f.options.form) << ")\n\n";
    if (!f.fit.ok) {
      os << "Not fitted: " << f.fit.message << "\n\n";
      continue;
    }
    std::snprintf(buf, sizeof buf,
                  "%zu points; Huber δ = %g on log-loss residuals, %s, L2 %g; objective %.4g, RMSE %.4g nats, "
                  "MARE %.3g%%.\n\n",
                  f.points.size(), f.options.huber_delta, solver_name(f.options.solver), f.options.l2,
                  f.fit.objective, f.fit.rmse, 100 * f.fit.mare);
    os << buf << "| coefficient | value | 95% interval | flags |\n|---|---|---|---|\n";
    const auto names = law_param_names();
    const auto vals = law_values(f.fit.law);
    for (size_t k = 0; k < names.size(); ++k) {
      if (f.options.form != LawForm::Fine && (names[k] == "g" || names[k] == "gamma")) continue;
      std::string ci = "–";
      if (names[k] == "c" && f.options.fix_c) ci = "fixed";
      else if (names[k] == "gamma" && f.options.fix_gamma && !f.options.gamma_from_profile) ci = "fixed";
      else if (f.has_bootstrap && f.boot.succeeded > 1) {
        std::snprintf(buf, sizeof buf, "[%.4g, %.4g]%s", f.boot.intervals[k].lo, f.boot.intervals[k].hi,
                      names[k] == "gamma" && f.options.gamma_from_profile ? " (G profile)" : "");
        ci = buf;
      }
      std::string fl;
      for (const auto& g : f.guard.flags)
        if (g.param == names[k]) fl += (fl.empty() ? "" : ", ") + g.kind;
      std::snprintf(buf, sizeof buf, "| %s | %.5g | %s | %s |\n", names[k].c_str(), vals[k], ci.c_str(),
                    fl.empty() ? "–" : ("**" + fl + "**").c_str());
      os << buf;
    }
    if (f.guard.flags.empty()) {
      os << "\nGuardrails: no flags (no coefficient on a solver bound or set by the L2 prior"
         << (f.has_bootstrap ? ", bootstrap intervals within a decade / ±50 %, no bimodal distribution" : "")
         << (std::isfinite(a.runs.mean_entropy_rate()) && !f.options.fix_c ? ", c not below the data's entropy rate" : "")
         << ").\n";
    } else {
      os << "\n**Flags** — these numbers are not supported by the runs:\n\n";
      for (const auto& g : f.guard.flags) os << "- `" << g.kind << "` " << g.message << "\n";
      if (!f.guard.suggestions.empty()) {
        os << "\nWhat would identify them:\n\n";
        for (const auto& sg : f.guard.suggestions) os << "- " << sg << "\n";
      }
    }
    if (f.has_bootstrap)
      os << "\nBootstrap: " << f.boot.succeeded << "/" << f.boot.requested << " refits on "
         << a.options.boot.fraction * 100 << "% of the runs (drawn with replacement).\n";
    if (f.has_holdout) {
      if (f.holdout.ok)
        std::snprintf(buf, sizeof buf, "\nHoldout `%s`: %d runs held out, RMSE %.4g nats, MARE %.3g%%.\n",
                      f.holdout.rule.c_str(), f.holdout.test_runs, f.holdout.rmse, 100 * f.holdout.mare);
      else
        std::snprintf(buf, sizeof buf, "\nHoldout `%s`: %s\n", f.holdout.rule.c_str(), f.holdout.message.c_str());
      os << buf;
    }
    os << "\n";
  }
  os << g_profile_md(a);
  os << routing_comparison_md(a.routing_cmp);
  os << loss_vs_g_md(a.loss_vs_g, a.routing);
  os << loss_vs_g_iso_md(a.loss_vs_g_iso, a.routing);
  if (a.optimal.present) {
    const auto& op = a.optimal;
    os << "## Compute-optimal configurations\n\nLaw `" << op.law_name << "`: `" << law_to_string(op.law)
       << "`, E = " << op.options.E << ", d_model = " << op.options.aspect << "·n_blocks";
    if (op.has_dense) os << "; dense law `" << op.dense_name << "`: `" << law_to_string(op.dense) << "`";
    os << ". Table: [optimal.csv](optimal.csv).\n\n";
    os << "Dense compute multiplier: " << op.dense_note << ".\n\n";
    if (!op.flags_note.empty()) os << "**Warning:** " << op.flags_note << ".\n\n";
    size_t n_extra = 0;
    for (const auto& r : op.rows) n_extra += r.extrapolated;
    if (op.has_range) {
      std::snprintf(buf, sizeof buf,
                    "The fitted runs reach F = %.3g FLOPs, N = %.3g, D = %.3g tokens. %zu of %zu rows lie more than 10× "
                    "beyond them (marked *extrapolated*): those rows are the law's extrapolation, not supported by "
                    "runs.\n\n",
                    op.F_max, op.N_max, op.D_max, n_extra, op.rows.size());
      os << buf;
    } else {
      os << "No runs were fitted: the table is the given law's, with no data range to compare.\n\n";
    }
    if (op.has_dense)
      os << "Each multiplier is the dense compute that reaches the MoE loss, divided by the budget: at the row's "
            "optimal G, and "
            "(*same, G = 1*) with the same law at G fixed to 1 (coarse MoE, its own optimal shape at that budget). "
            "The range column marks the optimal-G row; a G = 1 optimum beyond the runs is marked there too.\n\n";
    os << "| budget (FLOPs) | n_blocks | d_model | N_active | N_total | G | D (tokens) | D/N_active | loss | dense "
          "compute multiplier | same, G = 1 | range |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : op.rows) {
      const auto& b = r.best;
      char mult[32] = "–", mult1[48] = "–";
      if (op.has_dense) {
        std::snprintf(mult, sizeof mult, std::isfinite(r.multiplier) ? "%.3g×" : "unreachable", r.multiplier);
        std::snprintf(mult1, sizeof mult1,
                      std::isfinite(r.multiplier_g1)  ? "%.3g×"
                      : std::isnan(r.multiplier_g1)   ? "– (G = 1 not a candidate)"
                                                      : "unreachable",
                      r.multiplier_g1);
      }
      std::string range = r.extrapolated ? "*extrapolated* (" + r.extrapolated_why + ")" : "data";
      if (r.extrapolated_g1 && r.extrapolated_g1_why != r.extrapolated_why)
        range += "; G = 1 optimum: *extrapolated* (" + r.extrapolated_g1_why + ")";
      std::snprintf(buf, sizeof buf, "| %.3g | %.2f | %.0f | %.3g | %.3g | %g | %.4g | %.1f | %.4f | %s | %s | %s |\n",
                    b.budget, b.n_blocks, b.d_model, b.N_active, b.N_total, b.G, b.D, b.tokens_per_active, b.loss,
                    mult, mult1, range.c_str());
      os << buf;
    }
    os << "\n";
  }
  if (!plots.empty()) {
    os << "## Plots\n\n";
    for (const auto& p : plots) os << "- " << p << ": ![" << p << "](plots/" << p << ".png) ([svg](plots/" << p << ".svg))\n";
  }
  return os.str();
}

}  // namespace

std::string fit_json(const Analysis& a) {
  JsonWriter w;
  w.begin_object();
  w.str("tool", "moe-analyze").num("format_version", 1).str("runs_dir", a.options.runs_dir);
  w.str("points_file", a.options.points).str("final_loss", a.options.collect.final_from_eval ? "eval" : "train");
  if (!a.c_note.empty()) w.str("c_fixed_note", a.c_note);
  if (!a.gamma_note.empty()) w.str("gamma_fixed_note", a.gamma_note);
  // The data's irreducible loss (null when the runs do not know it, e.g. token shards).
  w.num("data_entropy_rate", a.runs.mean_entropy_rate());
  w.num("final_window", double(a.options.collect.final_window));
  w.begin_object("routing").str("fitted", a.routing).str("chosen_by", a.routing_chosen_by);
  w.begin_object("moe_runs");
  for (const auto& [name, n] : a.routing_counts) w.num(name, n);
  w.end_object();
  w.num("not_fitted", a.routing_excluded).str("note", a.routing_note).end_object();
  w.begin_array("fits");
  for (const auto& f : a.fits) json_fit(w, a, f);
  w.end_array();
  w.begin_array("runs");
  for (const auto& r : a.runs.runs) {
    w.begin_object().str("name", r.name).str("path", r.path).str("status", r.status);
    w.num("d_model", r.d_model).num("n_blocks", r.n_blocks).num("E", r.E).num("G", r.G);
    w.boolean("dense", r.dense).str("routing", r.routing).boolean("cooldown_branch", r.cooldown);
    w.num("N", r.N).num("N_active", r.N_active).num("D", r.D).num("F", r.F).num("final_loss", r.final_loss);
    w.str("final_source", r.final_source).num("final_stderr", r.final_stderr);
    if (!r.warning.empty()) w.str("warning", r.warning);
    w.num("window", double(r.window)).num("points", double(r.points.size())).end_object();
  }
  w.end_array();
  w.begin_array("skipped");
  for (const auto& s : a.runs.skipped) w.begin_object().str("path", s.path).str("reason", s.reason).end_object();
  w.end_array();
  w.begin_array("excluded");
  for (const auto& n : a.notes) w.str(n);
  if (!a.routing_note.empty()) w.str(a.routing_note);
  w.end_array();
  json_g_profile(w, a);
  json_routing_comparison(w, a.routing_cmp);
  json_loss_vs_g(w, a.loss_vs_g);
  json_loss_vs_g_iso(w, a.loss_vs_g_iso);
  if (a.optimal.present) {
    const auto& op = a.optimal;
    w.begin_object("optimal").str("law_name", op.law_name);
    json_law(w, "law", op.law, true);
    if (op.has_dense) {
      w.str("dense_law_name", op.dense_name);
      json_law(w, "dense_law", op.dense, false);
    }
    w.str("dense_comparison", op.dense_note);
    w.boolean("inherits_flags", !op.flags_note.empty());
    if (!op.flags_note.empty()) w.str("flags_note", op.flags_note);
    if (op.has_range)
      w.begin_object("fitted_range").num("F_min", op.F_min).num("F_max", op.F_max).num("N_max", op.N_max)
          .num("D_max", op.D_max).num("extrapolation_factor", 10).end_object();
    w.num("E", op.options.E).num("aspect", op.options.aspect);
    w.begin_array("rows");
    for (const auto& r : op.rows) {
      const auto& b = r.best;
      w.begin_object().num("budget", b.budget).num("n_blocks", b.n_blocks).num("d_model", b.d_model);
      w.num("N_active", b.N_active).num("N_total", b.N_total).num("G", b.G).num("D", b.D);
      w.num("tokens_per_active_param", b.tokens_per_active).num("loss", b.loss);
      if (op.has_dense)
        w.num("dense_optimal_loss", r.dense_loss).num("dense_compute", r.dense_compute).num("multiplier", r.multiplier)
            .num("multiplier_g1", r.multiplier_g1);
      w.boolean("extrapolated", r.extrapolated).str("extrapolated_by", r.extrapolated_why);
      w.boolean("extrapolated_g1", r.extrapolated_g1).str("extrapolated_g1_by", r.extrapolated_g1_why);
      w.begin_array("loss_per_G");
      for (const auto& p : r.per_g) w.begin_object().num("G", p.G).num("loss", p.loss).num("n_blocks", p.n_blocks).end_object();
      w.end_array().end_object();
    }
    w.end_array().end_object();
  }
  w.end_object();
  return w.text();
}

void write_outputs(const Analysis& a) {
  const fs::path out(a.options.out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error("--out: cannot create '" + out.string() + "': " + ec.message());
  write_file(out / "fit.json", fit_json(a));
  write_file(out / "runs.csv", runs_csv(a));
  if (a.optimal.present) write_file(out / "optimal.csv", optimal_csv(a));
  std::vector<std::string> plots;
  if (a.options.plots) plots = make_plots(a);
  write_file(out / "report.md", report_md(a, plots));
}

}  // namespace finemoe::analysis
