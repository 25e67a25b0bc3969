// Two tables of measured final losses that need no law:
//  - expert choice vs token choice at the same (E, size, D, G);
//  - final loss vs G per (size, D), with the dense run of the same size and D;
//  - final loss vs G per size at equal training FLOPs F (the router's FLOPs
//    grow with G, so equal D is not equal compute), interpolated in log F
//    between each G's own runs.
// A run enters through its final point (final_loss ± final_stderr, D, F).
// Runs sharing a key and routing (e.g. seeds) are averaged into one cell.
#pragma once
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "runs.hpp"

namespace finemoe::analysis {

class JsonWriter;

// The runs of one key: mean final loss, standard error of that mean
// (sqrt(Σ se²)/k, NaN when a run's SE is unknown), mean training FLOPs.
struct Cell {
  double loss = 0, se = NAN, F = 0;
  std::vector<std::string> names;  // the runs averaged
};

// sqrt(se_a² + se_b²); NaN when either is unknown.
double combined_se(const Cell& a, const Cell& b);

// A model size as the tables name it: "n_blocks×d_model" when known, else by N_active.
std::string size_label(double n_blocks, double d_model, double N_active);

struct RoutingRow {
  double E = 0, n_blocks = 0, d_model = 0, N_active = 0, D = 0, G = 1;
  Cell ec, tc;
  double diff = 0;           // TC − EC (nats)
  double se = NAN;           // combined_se(ec, tc)
  bool significant = false;  // |diff| > 2·se; false when se is unknown
};

struct RoutingComparison {
  bool present = false;          // MoE runs of both routings exist
  int ec_runs = 0, tc_runs = 0;  // MoE runs of each routing
  std::vector<RoutingRow> rows;  // keys present in both; by size, D, G
};

RoutingComparison compare_routing(const RunSet& runs);

struct LossVsGEntry {
  double G = 1;
  Cell cell;
};

struct LossVsG {
  double E = 0, n_blocks = 0, d_model = 0, N_active = 0, D = 0;
  std::vector<LossVsGEntry> per_g;  // ascending G, at least 2
  bool has_dense = false;
  Cell dense;                       // the dense run(s) at the same size and D
  double F_spread = 0;              // max F / min F − 1 over per_g
  double best_G = 0, runner_up_G = 0;
  double gap = 0;                   // runner-up loss − best loss (≥ 0)
  double gap_se = NAN;              // combined SE of those two
  bool distinguishable = false;     // gap > 2·gap_se; false when gap_se is unknown
};

// One row per (E, size, D) with at least two values of G among runs.runs[i], i in `moe_runs`.
std::vector<LossVsG> loss_vs_g(const RunSet& runs, const std::vector<int>& moe_runs);

// One G (or the dense runs) at one budget F: an exact run cell, or the
// interpolation in log F between the two cells of that G whose F bracket it.
struct IsoFlopsEntry {
  double G = 1;                    // 1 for dense
  double loss = 0, se = NAN;       // se: NaN when a bracketing cell's SE is unknown
  bool interpolated = false;       // false: F is a cell's F (within 1e-9 relative)
  double F_lo = 0, F_hi = 0;       // the bracketing cells' F (both the cell's F when exact)
  double D_lo = 0, D_hi = 0;       // and their D
  std::vector<std::string> runs;   // the runs behind it
};

struct LossVsGIsoRow {
  double F = 0;                      // the reference budget: F of a reference-G cell
  double D_ref = 0;                  // that cell's D
  std::vector<IsoFlopsEntry> per_g;  // ascending G; only the G whose F range holds F; at least 2
  std::vector<double> outside_G;     // G of the size left out: F outside their runs' F (no extrapolation)
  bool has_dense = false;
  IsoFlopsEntry dense;               // dense runs of the same size, interpolated the same way
  double best_G = 0, runner_up_G = 0;
  double gap = 0, gap_se = NAN;      // runner-up − best loss, combined SE of the two
  bool distinguishable = false;      // gap > 2·gap_se; false when gap_se is unknown
};

struct LossVsGIso {
  double E = 0, n_blocks = 0, d_model = 0, N_active = 0;
  double reference_G = 1;            // G whose cells give the budgets: 1, else the smallest usable G
  std::vector<double> G_values;      // the usable G (cells at >= 2 distinct F), ascending
  bool has_dense_runs = false;       // dense runs of this size exist
  std::vector<LossVsGIsoRow> rows;   // ascending F; rows with fewer than 2 G are left out
};

// For every (E, n_blocks, d_model) size with at least two G that each have
// cells (runs averaged per (G, D) as in loss_vs_g) at >= 2 distinct F: one row
// per F of the reference G's cells, the loss of every G at that F, linear in
// log F between the G's two cells that bracket it (never extrapolated).
std::vector<LossVsGIso> loss_vs_g_iso_flops(const RunSet& runs, const std::vector<int>& moe_runs);

// Terminal lines, report.md sections and fit.json members (compare_report.cpp).
void print_routing_comparison(FILE* f, const RoutingComparison& c);
void print_loss_vs_g(FILE* f, const std::vector<LossVsG>& rows, const std::string& routing);
void print_loss_vs_g_iso(FILE* f, const std::vector<LossVsGIso>& sizes, const std::string& routing);
std::string routing_comparison_md(const RoutingComparison& c);
std::string loss_vs_g_md(const std::vector<LossVsG>& rows, const std::string& routing);
std::string loss_vs_g_iso_md(const std::vector<LossVsGIso>& sizes, const std::string& routing);
void json_routing_comparison(JsonWriter& w, const RoutingComparison& c);
void json_loss_vs_g(JsonWriter& w, const std::vector<LossVsG>& rows);
void json_loss_vs_g_iso(JsonWriter& w, const std::vector<LossVsGIso>& sizes);

}  // namespace finemoe::analysis
