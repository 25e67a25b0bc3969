// Two tables of measured final losses that need no law:
//  - expert choice vs token choice at the same (E, size, D, G);
//  - final loss vs G per (size, D), with the dense run of the same size and D.
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

// Terminal lines, report.md sections and fit.json members (compare_report.cpp).
void print_routing_comparison(FILE* f, const RoutingComparison& c);
void print_loss_vs_g(FILE* f, const std::vector<LossVsG>& rows, const std::string& routing);
std::string routing_comparison_md(const RoutingComparison& c);
std::string loss_vs_g_md(const std::vector<LossVsG>& rows, const std::string& routing);
void json_routing_comparison(JsonWriter& w, const RoutingComparison& c);
void json_loss_vs_g(JsonWriter& w, const std::vector<LossVsG>& rows);

}  // namespace finemoe::analysis
