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
std::string best_text(const LossVsG& r) {
  char b[160];
  if (!std::isfinite(r.gap_se))
    std::snprintf(b, sizeof b, "G = %g (runner-up G = %g %.4f higher; SE unknown)", r.best_G, r.runner_up_G, r.gap);
  else if (!r.distinguishable)
    std::snprintf(b, sizeof b, "G = %g, not distinguishable from G = %g (gap %.4f ≤ 2 SE %.4f)", r.best_G,
                  r.runner_up_G, r.gap, 2 * r.gap_se);
  else
    std::snprintf(b, sizeof b, "G = %g (G = %g next, gap %.4f > 2 SE %.4f)", r.best_G, r.runner_up_G, r.gap,
                  2 * r.gap_se);
  return b;
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
        "the row's runs, so \"equal compute\" holds only to within it (every run's F: runs.csv, fit.json). "
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

}  // namespace finemoe::analysis
