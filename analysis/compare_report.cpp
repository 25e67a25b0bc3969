// The compare.hpp tables as terminal lines, report.md sections and fit.json members.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "compare.hpp"
#include "json.hpp"

namespace finemoe::analysis {
namespace {

// 2 SE, or "–" when unknown.
std::string two_se(double se) {
  char b[32] = "–";
  if (std::isfinite(se)) std::snprintf(b, sizeof b, "%.4f", 2 * se);
  return b;
}

std::string loss_pm(const Cell& c) {
  char b[96];
  if (std::isfinite(c.se)) std::snprintf(b, sizeof b, "%.4f ± %.4f", c.loss, c.se);
  else std::snprintf(b, sizeof b, "%.4f ± ?", c.loss);
  std::string s = b;
  if (c.names.size() > 1) s += " (mean of " + std::to_string(c.names.size()) + ")";
  return s;
}

const char* verdict(const RoutingRow& r) {
  return !std::isfinite(r.se) ? "SE unknown" : r.significant ? "yes" : "no";
}

// "G = 8", "G = 8 (not distinguishable from G = 4)", "G = 8 (SE unknown)".
std::string best_text(double best_G, double runner_up_G, double gap, double gap_se, bool distinguishable) {
  char b[160];
  if (!std::isfinite(gap_se))
    std::snprintf(b, sizeof b, "G = %g (runner-up G = %g %.4f higher; SE unknown)", best_G, runner_up_G, gap);
  else if (!distinguishable)
    std::snprintf(b, sizeof b, "G = %g, not distinguishable from G = %g (gap %.4f ≤ 2 SE %.4f)", best_G, runner_up_G,
                  gap, 2 * gap_se);
  else
    std::snprintf(b, sizeof b, "G = %g (G = %g next, gap %.4f > 2 SE %.4f)", best_G, runner_up_G, gap, 2 * gap_se);
  return b;
}

std::string best_text(const LossVsG& r) { return best_text(r.best_G, r.runner_up_G, r.gap, r.gap_se, r.distinguishable); }

std::string best_text(const LossVsGIsoRow& r) {
  return best_text(r.best_G, r.runner_up_G, r.gap, r.gap_se, r.distinguishable);
}

// "3.0000 ± 0.0040", with a (markdown-escaped) asterisk when interpolated.
std::string loss_pm(const IsoFlopsEntry& e) {
  char b[96];
  const char* mark = e.interpolated ? "\\*" : "";
  if (std::isfinite(e.se)) std::snprintf(b, sizeof b, "%.4f ± %.4f%s", e.loss, e.se, mark);
  else std::snprintf(b, sizeof b, "%.4f ± ?%s", e.loss, mark);
  return b;
}

void json_iso_entry(JsonWriter& w, const IsoFlopsEntry& e) {
  w.num("loss", e.loss).num("se", e.se).boolean("interpolated", e.interpolated);
  w.num("F_lo", e.F_lo).num("F_hi", e.F_hi).num("D_lo", e.D_lo).num("D_hi", e.D_hi);
  w.begin_array("runs");
  for (const auto& n : e.runs) w.str(n);
  w.end_array();
}

void json_cell(JsonWriter& w, const std::string& prefix, const Cell& c) {
  w.num(prefix + "loss", c.loss).num(prefix + "se", c.se).num(prefix + "F", c.F);
  w.begin_array(prefix + "runs");
  for (const auto& n : c.names) w.str(n);
  w.end_array();
}

// Summary over the rows: mean TC − EC and how many are significant, each way.
struct RoutingSummary {
  double mean_diff = 0;
  int significant = 0, tc_worse = 0, tc_better = 0, unknown = 0;
};

RoutingSummary summarise(const RoutingComparison& c) {
  RoutingSummary s;
  for (const auto& r : c.rows) {
    s.mean_diff += r.diff / double(c.rows.size());
    if (!std::isfinite(r.se)) ++s.unknown;
    if (r.significant) ++s.significant, (r.diff > 0 ? s.tc_worse : s.tc_better)++;
  }
  return s;
}

}  // namespace

void print_routing_comparison(FILE* f, const RoutingComparison& c) {
  if (!c.present) return;
  std::fprintf(f, "expert vs token choice (%d EC, %d TC MoE runs): %zu (E, size, D, G) with both\n", c.ec_runs,
               c.tc_runs, c.rows.size());
  if (c.rows.empty()) return;
  std::fprintf(f, "  %4s %-10s %10s %4s %-18s %-18s %8s %8s %s\n", "E", "size", "D", "G", "EC loss +- SE",
               "TC loss +- SE", "TC-EC", "2*SE", "|TC-EC| > 2*SE");
  for (const auto& r : c.rows)
    std::fprintf(f, "  %4g %-10s %10.4g %4g %-18s %-18s %+8.4f %8s %s\n", r.E,
                 size_label(r.n_blocks, r.d_model, r.N_active).c_str(), r.D, r.G, loss_pm(r.ec).c_str(),
                 loss_pm(r.tc).c_str(), r.diff, two_se(r.se).c_str(), verdict(r));
  const RoutingSummary s = summarise(c);
  std::fprintf(f, "  TC - EC: mean %+.4f nats; beyond 2 combined SE in %d of %zu (TC worse %d, better %d)%s\n",
               s.mean_diff, s.significant, c.rows.size(), s.tc_worse, s.tc_better,
               s.unknown ? (", " + std::to_string(s.unknown) + " without an SE").c_str() : "");
}

void print_loss_vs_g(FILE* f, const std::vector<LossVsG>& rows, const std::string& routing) {
  if (rows.empty()) return;
  std::fprintf(f, "final loss vs G (%s MoE runs, measured; best G 'not distinguishable' within 2 combined SE):\n",
               routing.c_str());
  for (const auto& r : rows) {
    std::fprintf(f, "  E %g %s D %.4g:", r.E, size_label(r.n_blocks, r.d_model, r.N_active).c_str(), r.D);
    for (const auto& e : r.per_g) std::fprintf(f, " G=%g %s,", e.G, loss_pm(e.cell).c_str());
    if (r.has_dense) std::fprintf(f, " dense %s,", loss_pm(r.dense).c_str());
    std::fprintf(f, " F spread %.2f%%; best %s\n", 100 * r.F_spread, best_text(r).c_str());
  }
}

void print_loss_vs_g_iso(FILE* f, const std::vector<LossVsGIso>& sizes, const std::string& routing) {
  if (sizes.empty()) return;
  std::fprintf(f,
               "final loss vs G at equal compute (%s MoE runs, interpolated in log F within each G's runs; best G "
               "per budget):\n",
               routing.c_str());
  for (const auto& s : sizes) {
    std::fprintf(f, "  E %g %s (budgets of G = %g):", s.E, size_label(s.n_blocks, s.d_model, s.N_active).c_str(),
                 s.reference_G);
    const char* sep = " ";
    for (const auto& r : s.rows) {
      std::fprintf(f, "%sF %.3g: G = %g", sep, r.F, r.best_G);
      if (!std::isfinite(r.gap_se)) std::fprintf(f, " (SE unknown)");
      else if (!r.distinguishable) std::fprintf(f, " (not distinguishable from G = %g)", r.runner_up_G);
      sep = "; ";
    }
    std::fprintf(f, "\n");
  }
}

std::string routing_comparison_md(const RoutingComparison& c) {
  if (!c.present) return "";
  std::ostringstream os;
  char buf[512];
  os << "## Expert choice vs token choice\n\n";
  os << c.ec_runs << " expert-choice (EC) and " << c.tc_runs << " token-choice (TC) MoE runs; " << c.rows.size()
     << " (E, size, D, G) have runs of both routings. Final loss ± the standard error of its final evaluation; "
        "TC − EC in nats; the last column says whether |TC − EC| > 2·sqrt(SE_EC² + SE_TC²). That combined SE "
        "ignores the positive correlation of two runs evaluated on the same held-out tokens (the SE of their "
        "difference is smaller), so the test is conservative in that respect; it also leaves out seed-to-seed "
        "variation of training, which one run per cell cannot measure. Plot: `routing`.\n\n";
  if (c.rows.empty()) {
    os << "No (E, size, D, G) has runs of both routings: nothing to compare.\n\n";
    return os.str();
  }
  os << "| E | size | D (tokens) | G | EC loss ± SE | TC loss ± SE | TC − EC | 2 × combined SE | difference > 2 SE |\n"
        "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : c.rows) {
    std::snprintf(buf, sizeof buf, "| %g | %s | %.4g | %g | %s | %s | %+.4f | %s | %s |\n", r.E,
                  size_label(r.n_blocks, r.d_model, r.N_active).c_str(), r.D, r.G, loss_pm(r.ec).c_str(),
                  loss_pm(r.tc).c_str(), r.diff, two_se(r.se).c_str(), verdict(r));
    os << buf;
  }
  const RoutingSummary s = summarise(c);
  std::snprintf(buf, sizeof buf,
                "\nTC − EC: mean %+.4f nats over %zu rows; beyond 2 combined SE in %d (TC worse in %d, better in "
                "%d)%s.\n\n",
                s.mean_diff, c.rows.size(), s.significant, s.tc_worse, s.tc_better,
                s.unknown ? ("; " + std::to_string(s.unknown) + " without an SE (no verdict)").c_str() : "");
  os << buf;
  return os.str();
}

std::string loss_vs_g_md(const std::vector<LossVsG>& rows, const std::string& routing) {
  if (rows.empty()) return "";
  std::ostringstream os;
  char buf[512];
  std::set<double> gs;
  for (const auto& r : rows)
    for (const auto& e : r.per_g) gs.insert(e.G);
  os << "## Final loss vs G per size and token budget\n\n";
  os << "Measured final losses (± the standard error of the final evaluation) of the fitted " << routing
     << " MoE runs — data, not the law — for every (E, size, D) with at least two G; the dense run of the same size "
        "and D where there is one. Best G: the lowest loss; *not distinguishable* when the runner-up is within 2 "
        "combined SE (sqrt(SE₁² + SE₂²), which ignores the correlation of evaluations on the same held-out tokens). "
        "FLOPs differ with G through the router (d·E·G·14 per token and block): F spread = max F / min F − 1 over "
        "the row's runs, so \"equal compute\" holds only to within it (every run's F: runs.csv, fit.json; at equal F: "
        "the next section, where the runs allow it). "
        "Plot: `loss_vs_g`.\n\n";
  os << "| E | size | D (tokens) |";
  for (double G : gs) os << " G = " << G << " |";
  os << " dense | F (min – max) | F spread | best G |\n|---|---|---|";
  for (size_t i = 0; i < gs.size(); ++i) os << "---|";
  os << "---|---|---|---|\n";
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %g | %s | %.4g |", r.E, size_label(r.n_blocks, r.d_model, r.N_active).c_str(),
                  r.D);
    os << buf;
    double F_min = INFINITY, F_max = 0;
    for (double G : gs) {
      auto it = std::find_if(r.per_g.begin(), r.per_g.end(), [&](const LossVsGEntry& e) { return e.G == G; });
      if (it == r.per_g.end()) {
        os << " – |";
        continue;
      }
      F_min = std::min(F_min, it->cell.F), F_max = std::max(F_max, it->cell.F);
      os << " " << loss_pm(it->cell) << (it->G == r.best_G ? " **best**" : "") << " |";
    }
    std::snprintf(buf, sizeof buf, " %s | %.3g – %.3g | %.2f %% | %s |\n",
                  r.has_dense ? loss_pm(r.dense).c_str() : "–", F_min, F_max, 100 * r.F_spread,
                  best_text(r).c_str());
    os << buf;
  }
  int nd = 0;
  for (const auto& r : rows) nd += !r.distinguishable;
  std::snprintf(buf, sizeof buf, "\nIn %d of %zu rows the best G is not distinguishable from the runner-up.\n\n", nd,
                rows.size());
  os << buf;
  return os.str();
}

std::string loss_vs_g_iso_md(const std::vector<LossVsGIso>& sizes, const std::string& routing) {
  if (sizes.empty()) return "";
  std::ostringstream os;
  char buf[512];
  os << "## Final loss vs G at equal compute (interpolated in log F between a G's own runs)\n\n";
  os << "Same D is not equal compute: the router's FLOPs (d·E·G·14 per token and block) grow with G. Here the "
        "budgets are the training FLOPs F of each size's G = 1 runs (of its smallest G when it has no G = 1 runs), "
        "and the loss of every G at such an F is the measured final loss of the "
     << routing
     << " MoE runs, linear in log F between the two runs (runs of one (G, D) averaged) of that G whose F bracket "
        "it — an asterisk marks those interpolated cells; unmarked cells are runs at that F. Never extrapolated: "
        "\"–\" where F lies outside the G's runs, and a budget with fewer than two G left is not shown. Only sizes "
        "with at least two G that each have runs at two or more F. The SE of an interpolated cell is the two runs' "
        "SEs interpolated the same way: a rough value that ignores the covariance of the two evaluations and the "
        "error of the log-linear interpolation. Best G: the lowest loss; *not distinguishable* when the runner-up is "
        "within 2 combined SE. Dense: the dense runs of the same size, interpolated the same way. "
        "Plot: `loss_vs_g_iso`.\n\n";
  int nd = 0, nrows = 0;
  for (const auto& s : sizes) {
    std::snprintf(buf, sizeof buf, "### E %g, size %s (budgets: F of the G = %g runs)\n\n", s.E,
                  size_label(s.n_blocks, s.d_model, s.N_active).c_str(), s.reference_G);
    os << buf;
    std::snprintf(buf, sizeof buf, "| F (FLOPs) | D of the G = %g run |", s.reference_G);
    os << buf;
    for (double G : s.G_values) os << " G = " << G << " |";
    if (s.has_dense_runs) os << " dense |";
    os << " best G |\n|---|---|";
    for (size_t i = 0; i < s.G_values.size() + (s.has_dense_runs ? 1 : 0); ++i) os << "---|";
    os << "---|\n";
    for (const auto& r : s.rows) {
      std::snprintf(buf, sizeof buf, "| %.4g | %.4g |", r.F, r.D_ref);
      os << buf;
      for (double G : s.G_values) {
        auto it = std::find_if(r.per_g.begin(), r.per_g.end(), [&](const IsoFlopsEntry& e) { return e.G == G; });
        if (it == r.per_g.end()) os << " – |";
        else os << " " << loss_pm(*it) << (G == r.best_G ? " **best**" : "") << " |";
      }
      if (s.has_dense_runs) os << " " << (r.has_dense ? loss_pm(r.dense) : std::string("–")) << " |";
      os << " " << best_text(r) << " |\n";
      nd += !r.distinguishable, ++nrows;
    }
    os << "\n";
  }
  std::snprintf(buf, sizeof buf,
                "\\* interpolated in log F between two runs of that G. In %d of %d budgets the best G is not "
                "distinguishable from the runner-up.\n\n",
                nd, nrows);
  os << buf;
  return os.str();
}

void json_routing_comparison(JsonWriter& w, const RoutingComparison& c) {
  w.begin_object("routing_comparison");
  w.boolean("present", c.present).num("ec_runs", c.ec_runs).num("tc_runs", c.tc_runs);
  w.str("significance", "|tc_loss - ec_loss| > 2 * sqrt(ec_se^2 + tc_se^2); ignores the positive correlation of "
                        "evaluations on the same held-out tokens (conservative)");
  w.begin_array("rows");
  for (const auto& r : c.rows) {
    w.begin_object().num("E", r.E).num("n_blocks", r.n_blocks).num("d_model", r.d_model).num("N_active", r.N_active);
    w.num("D", r.D).num("G", r.G);
    json_cell(w, "ec_", r.ec);
    json_cell(w, "tc_", r.tc);
    w.num("diff", r.diff).num("combined_se", r.se).boolean("se_known", std::isfinite(r.se));
    w.boolean("significant", r.significant).end_object();
  }
  w.end_array().end_object();
}

void json_loss_vs_g(JsonWriter& w, const std::vector<LossVsG>& rows) {
  w.begin_array("loss_vs_g");
  for (const auto& r : rows) {
    w.begin_object().num("E", r.E).num("n_blocks", r.n_blocks).num("d_model", r.d_model).num("N_active", r.N_active);
    w.num("D", r.D);
    w.begin_array("per_G");
    for (const auto& e : r.per_g) {
      w.begin_object().num("G", e.G);
      json_cell(w, "", e.cell);
      w.end_object();
    }
    w.end_array();
    w.boolean("has_dense", r.has_dense);
    if (r.has_dense) json_cell(w, "dense_", r.dense);
    w.num("F_spread", r.F_spread).num("best_G", r.best_G).num("runner_up_G", r.runner_up_G);
    w.num("gap", r.gap).num("gap_se", r.gap_se).boolean("distinguishable", r.distinguishable);
    w.end_object();
  }
  w.end_array();
}

void json_loss_vs_g_iso(JsonWriter& w, const std::vector<LossVsGIso>& sizes) {
  // One object per (size, reference budget F).
  w.begin_array("loss_vs_g_iso_flops");
  for (const auto& s : sizes)
    for (const auto& r : s.rows) {
      w.begin_object().num("E", s.E).num("n_blocks", s.n_blocks).num("d_model", s.d_model).num("N_active", s.N_active);
      w.num("reference_G", s.reference_G).num("F", r.F).num("reference_D", r.D_ref);
      w.str("interpolation", "linear in log F between the two runs of a G whose F bracket F; no extrapolation; "
                             "se interpolated linearly (rough: ignores the covariance)");
      w.begin_array("per_G");
      for (const auto& e : r.per_g) {
        w.begin_object().num("G", e.G);
        json_iso_entry(w, e);
        w.end_object();
      }
      w.end_array();
      w.begin_array("outside_G");
      for (double G : r.outside_G) w.num(G);
      w.end_array();
      w.boolean("has_dense", r.has_dense);
      if (r.has_dense) {
        w.begin_object("dense");
        json_iso_entry(w, r.dense);
        w.end_object();
      }
      w.num("best_G", r.best_G).num("runner_up_G", r.runner_up_G);
      w.num("gap", r.gap).num("gap_se", r.gap_se).boolean("distinguishable", r.distinguishable);
      w.end_object();
    }
  w.end_array();
}

}  // namespace finemoe::analysis
