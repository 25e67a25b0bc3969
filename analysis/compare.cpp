#include "compare.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>

namespace finemoe::analysis {
namespace {

// (E, n_blocks, d_model, N_active, D, G): equal within 1e-9 relative, so a
// --points CSV's computed N_active matches a run's.
using Key = std::array<double, 6>;

bool same(const Key& a, const Key& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::fabs(a[i] - b[i]) > 1e-9 * std::max(std::fabs(a[i]), std::fabs(b[i]))) return false;
  return true;
}

Key key_of(const RunInfo& r) { return {r.E, r.n_blocks, r.d_model, r.N_active, r.D, r.G}; }

struct Group {
  Key key;
  std::vector<const RunInfo*> runs;
};

void add(std::vector<Group>& groups, const Key& k, const RunInfo* r) {
  for (auto& g : groups)
    if (same(g.key, k)) {
      g.runs.push_back(r);
      return;
    }
  groups.push_back({k, {r}});
}

Cell cell_of(const std::vector<const RunInfo*>& runs) {
  Cell c;
  double var = 0;
  bool se_known = true;
  for (const RunInfo* r : runs) {
    c.loss += r->final_loss;
    c.F += r->F;
    if (std::isfinite(r->final_stderr) && r->final_stderr > 0) var += r->final_stderr * r->final_stderr;
    else se_known = false;
    c.names.push_back(r->name);
  }
  const double k = double(runs.size());
  c.loss /= k;
  c.F /= k;
  c.se = se_known ? std::sqrt(var) / k : NAN;
  return c;
}

bool key_less(const Key& a, const Key& b) {
  // By size (N_active, then shape), then D, then G; E first.
  const std::array<int, 6> order = {0, 3, 1, 2, 4, 5};
  for (int i : order)
    if (a[i] != b[i]) return a[i] < b[i];
  return false;
}

bool same_value(double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(std::fabs(a), std::fabs(b)); }

// One (G, D) cell of a size with its training FLOPs; a G's cells sorted by F.
struct FCell {
  double F = 0, D = 0;
  Cell cell;
};

int distinct_F(const std::vector<FCell>& cells) {
  int n = 0;
  for (size_t i = 0; i < cells.size(); ++i) n += i == 0 || !same_value(cells[i].F, cells[i - 1].F);
  return n;
}

// The loss of these cells (ascending F) at budget F: the cell at F when there
// is one (within 1e-9 relative), else linear in log F between the two cells
// whose F bracket it. False when F lies outside their F range: no extrapolation.
bool at_budget(const std::vector<FCell>& cells, double F, double G, IsoFlopsEntry& e) {
  e = IsoFlopsEntry{};
  e.G = G;
  for (const auto& c : cells)
    if (same_value(c.F, F)) {
      e.loss = c.cell.loss, e.se = c.cell.se;
      e.F_lo = e.F_hi = c.F, e.D_lo = e.D_hi = c.D;
      e.runs = c.cell.names;
      return true;
    }
  for (size_t i = 0; i + 1 < cells.size(); ++i) {
    const FCell &a = cells[i], &b = cells[i + 1];
    if (!(a.F < F && F < b.F)) continue;
    const double t = (std::log(F) - std::log(a.F)) / (std::log(b.F) - std::log(a.F));
    e.interpolated = true;
    e.loss = (1 - t) * a.cell.loss + t * b.cell.loss;
    // A rough SE: the two cells' SEs interpolated linearly with the same
    // weights. It ignores the covariance of the two runs' evaluations (same
    // held-out tokens) and is not the SE of the weighted sum of two
    // independent losses (sqrt((1−t)²SE_a² + t²SE_b²), smaller); it does not
    // cover the error of assuming the loss linear in log F between the runs.
    e.se = (1 - t) * a.cell.se + t * b.cell.se;
    e.F_lo = a.F, e.F_hi = b.F, e.D_lo = a.D, e.D_hi = b.D;
    e.runs = a.cell.names;
    e.runs.insert(e.runs.end(), b.cell.names.begin(), b.cell.names.end());
    return true;
  }
  return false;
}

}  // namespace

double combined_se(const Cell& a, const Cell& b) {
  return std::isfinite(a.se) && std::isfinite(b.se) ? std::sqrt(a.se * a.se + b.se * b.se) : NAN;
}

std::string size_label(double n_blocks, double d_model, double N_active) {
  char b[64];
  if (n_blocks > 0 && d_model > 0) std::snprintf(b, sizeof b, "%g×%g", n_blocks, d_model);
  else std::snprintf(b, sizeof b, "N_active %.3g", N_active);
  return b;
}

RoutingComparison compare_routing(const RunSet& runs) {
  RoutingComparison c;
  std::vector<Group> ec, tc;
  for (const auto& r : runs.runs) {
    if (r.dense) continue;
    if (r.routing == kExpertChoice) add(ec, key_of(r), &r), ++c.ec_runs;
    else if (r.routing == kTokenChoice) add(tc, key_of(r), &r), ++c.tc_runs;
  }
  c.present = c.ec_runs > 0 && c.tc_runs > 0;
  if (!c.present) return c;
  std::vector<std::pair<Key, RoutingRow>> rows;
  for (const auto& e : ec)
    for (const auto& t : tc)
      if (same(e.key, t.key)) {
        RoutingRow row;
        row.E = e.key[0], row.n_blocks = e.key[1], row.d_model = e.key[2], row.N_active = e.key[3];
        row.D = e.key[4], row.G = e.key[5];
        row.ec = cell_of(e.runs);
        row.tc = cell_of(t.runs);
        row.diff = row.tc.loss - row.ec.loss;
        row.se = combined_se(row.ec, row.tc);
        row.significant = std::isfinite(row.se) && std::fabs(row.diff) > 2 * row.se;
        rows.push_back({e.key, row});
      }
  std::sort(rows.begin(), rows.end(), [](auto& x, auto& y) { return key_less(x.first, y.first); });
  for (auto& r : rows) c.rows.push_back(r.second);
  return c;
}

namespace {
// The MoE runs of the fit, one group per (E, size, D, G), and the dense runs,
// one group per (size, D): the cells both loss-vs-G tables average.
void group_cells(const RunSet& runs, const std::vector<int>& moe_runs, std::vector<Group>& cells,
                 std::vector<Group>& dense) {
  for (int i : moe_runs) add(cells, key_of(runs.runs[size_t(i)]), &runs.runs[size_t(i)]);
  for (const auto& r : runs.runs)
    if (r.dense) {
      Key k = key_of(r);
      k[0] = k[5] = 1;  // a dense run's E and G mean nothing (a --points row may carry any)
      add(dense, k, &r);
    }
}
}  // namespace

std::vector<LossVsG> loss_vs_g(const RunSet& runs, const std::vector<int>& moe_runs) {
  std::vector<Group> cells, dense;
  group_cells(runs, moe_runs, cells, dense);
  std::sort(cells.begin(), cells.end(), [](auto& x, auto& y) { return key_less(x.key, y.key); });
  std::vector<LossVsG> out;
  for (size_t i = 0; i < cells.size();) {
    // Cells are sorted by (E, size, D, G): one row is a run of equal (E, size, D).
    size_t j = i;
    auto same_row = [&](const Key& a, const Key& b) {
      Key x = a, y = b;
      x[5] = y[5] = 1;
      return same(x, y);
    };
    while (j < cells.size() && same_row(cells[i].key, cells[j].key)) ++j;
    if (j - i >= 2) {
      LossVsG row;
      const Key& k = cells[i].key;
      row.E = k[0], row.n_blocks = k[1], row.d_model = k[2], row.N_active = k[3], row.D = k[4];
      double F_min = INFINITY, F_max = 0;
      for (size_t m = i; m < j; ++m) {
        row.per_g.push_back({cells[m].key[5], cell_of(cells[m].runs)});
        F_min = std::min(F_min, row.per_g.back().cell.F);
        F_max = std::max(F_max, row.per_g.back().cell.F);
      }
      row.F_spread = F_max / F_min - 1;
      // Dense: same shape and D (E = G = 1 in a dense run's key).
      Key dk = {1, k[1], k[2], k[3], k[4], 1};
      for (const auto& d : dense)
        if (same(d.key, dk)) row.has_dense = true, row.dense = cell_of(d.runs);
      std::vector<size_t> by_loss(row.per_g.size());
      for (size_t m = 0; m < by_loss.size(); ++m) by_loss[m] = m;
      std::stable_sort(by_loss.begin(), by_loss.end(),
                       [&](size_t x, size_t y) { return row.per_g[x].cell.loss < row.per_g[y].cell.loss; });
      const auto& best = row.per_g[by_loss[0]];
      const auto& second = row.per_g[by_loss[1]];
      row.best_G = best.G;
      row.runner_up_G = second.G;
      row.gap = second.cell.loss - best.cell.loss;
      row.gap_se = combined_se(best.cell, second.cell);
      row.distinguishable = std::isfinite(row.gap_se) && row.gap > 2 * row.gap_se;
      out.push_back(std::move(row));
    }
    i = j;
  }
  return out;
}

std::vector<LossVsGIso> loss_vs_g_iso_flops(const RunSet& runs, const std::vector<int>& moe_runs) {
  // Cells as in loss_vs_g: runs of one (E, size, D, G) averaged.
  std::vector<Group> cells, dense;
  group_cells(runs, moe_runs, cells, dense);
  std::sort(cells.begin(), cells.end(), [](auto& x, auto& y) { return key_less(x.key, y.key); });
  auto by_F = [](std::vector<FCell>& v) {
    std::stable_sort(v.begin(), v.end(), [](const FCell& x, const FCell& y) { return x.F < y.F; });
  };
  // A size: (E, n_blocks, d_model, N_active), the key with D = G = 0.
  auto size_of = [](Key k) {
    k[4] = k[5] = 0;
    return k;
  };
  std::vector<LossVsGIso> out;
  for (size_t i = 0; i < cells.size();) {
    // Sorted by (E, size, D, G): one size is a run of cells.
    const Key size = size_of(cells[i].key);
    size_t j = i;
    std::map<double, std::vector<FCell>> by_g;
    for (; j < cells.size() && same(size_of(cells[j].key), size); ++j) {
      FCell c;
      c.cell = cell_of(cells[j].runs);
      c.F = c.cell.F, c.D = cells[j].key[4];
      by_g[cells[j].key[5]].push_back(std::move(c));
    }
    i = j;
    LossVsGIso s;
    s.E = size[0], s.n_blocks = size[1], s.d_model = size[2], s.N_active = size[3];
    std::map<double, std::vector<FCell>> usable;  // G with cells at >= 2 distinct F
    for (auto& [G, v] : by_g) {
      by_F(v);
      if (distinct_F(v) >= 2) usable[G] = v, s.G_values.push_back(G);
    }
    if (usable.size() < 2) continue;
    s.reference_G = usable.count(1.0) ? 1.0 : usable.begin()->first;
    // Dense cells of the same shape (any E), sorted by F.
    std::vector<FCell> dcells;
    for (const auto& d : dense) {
      Key dk = d.key, sk = size;
      dk[0] = dk[4] = dk[5] = sk[0] = 0;
      if (!same(dk, sk)) continue;
      FCell c;
      c.cell = cell_of(d.runs);
      c.F = c.cell.F, c.D = d.key[4];
      dcells.push_back(std::move(c));
    }
    by_F(dcells);
    s.has_dense_runs = !dcells.empty();
    const auto& ref = usable.at(s.reference_G);
    for (size_t m = 0; m < ref.size(); ++m) {
      if (m > 0 && same_value(ref[m].F, ref[m - 1].F)) continue;  // one row per distinct F
      LossVsGIsoRow row;
      row.F = ref[m].F, row.D_ref = ref[m].D;
      for (const auto& [G, v] : usable) {
        IsoFlopsEntry e;
        if (at_budget(v, row.F, G, e)) row.per_g.push_back(std::move(e));
        else row.outside_G.push_back(G);
      }
      if (row.per_g.size() < 2) continue;
      row.has_dense = at_budget(dcells, row.F, 1, row.dense);
      std::vector<size_t> by_loss(row.per_g.size());
      for (size_t k = 0; k < by_loss.size(); ++k) by_loss[k] = k;
      std::stable_sort(by_loss.begin(), by_loss.end(),
                       [&](size_t x, size_t y) { return row.per_g[x].loss < row.per_g[y].loss; });
      const auto& best = row.per_g[by_loss[0]];
      const auto& second = row.per_g[by_loss[1]];
      row.best_G = best.G, row.runner_up_G = second.G;
      row.gap = second.loss - best.loss;
      row.gap_se = std::isfinite(best.se) && std::isfinite(second.se) ? std::sqrt(best.se * best.se + second.se * second.se)
                                                                      : NAN;
      row.distinguishable = std::isfinite(row.gap_se) && row.gap > 2 * row.gap_se;
      s.rows.push_back(std::move(row));
    }
    if (!s.rows.empty()) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace finemoe::analysis
