#include "g_profile.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "guardrails.hpp"

namespace finemoe::analysis {
namespace {

constexpr double kGammaLo = 0.01, kGammaHi = 3.0;

// One cell: the (log G, log L, weight) of its points.
struct Cell {
  std::vector<double> logG, y, w;
  double Gmin = 0, Gmax = 0;
};

std::vector<Cell> make_cells(const std::vector<FitPoint>& pts, int* n_points, int* n_runs) {
  std::map<std::pair<double, double>, std::vector<const FitPoint*>> by_nd;
  for (const auto& p : pts) by_nd[{p.N, p.D}].push_back(&p);
  std::vector<Cell> cells;
  std::set<int> runs;
  *n_points = 0;
  for (const auto& [nd, v] : by_nd) {
    std::set<double> Gs;
    for (const auto* p : v) Gs.insert(p->G);
    if (Gs.size() < 3) continue;
    Cell c;
    c.Gmin = *Gs.begin(), c.Gmax = *Gs.rbegin();
    for (const auto* p : v) {
      c.logG.push_back(std::log(p->G));
      c.y.push_back(std::log(p->loss));
      c.w.push_back(p->weight);
      runs.insert(p->group);
    }
    *n_points += int(v.size());
    cells.push_back(std::move(c));
  }
  *n_runs = int(runs.size());
  return cells;
}

// Weighted least squares of y = m + s·x in one cell; returns the residual sum
// of squares and sets m, s.
double cell_fit(const Cell& c, double gamma, double* m, double* s) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < c.y.size(); ++i) {
    const double x = std::exp(-gamma * c.logG[i]), w = c.w[i];
    sw += w, sx += w * x, sy += w * c.y[i], sxx += w * x * x, sxy += w * x * c.y[i];
  }
  const double det = sw * sxx - sx * sx;
  *s = det > 0 ? (sw * sxy - sx * sy) / det : 0.0;
  *m = (sy - *s * sx) / sw;
  double r2 = 0;
  for (size_t i = 0; i < c.y.size(); ++i) {
    const double r = c.y[i] - *m - *s * std::exp(-gamma * c.logG[i]);
    r2 += c.w[i] * r * r;
  }
  return r2;
}

double total_sse(const std::vector<Cell>& cells, double gamma) {
  double t = 0, m, s;
  for (const auto& c : cells) t += cell_fit(c, gamma, &m, &s);
  return t;
}

// Minimises total_sse over [kGammaLo, kGammaHi]: grid, then golden section
// within one grid step of the best grid point.
double best_gamma(const std::vector<Cell>& cells) {
  const double step = 0.01;
  double best = kGammaLo, best_v = std::numeric_limits<double>::infinity();
  for (double g = kGammaLo; g <= kGammaHi + 1e-12; g += step) {
    const double v = total_sse(cells, g);
    if (v < best_v) best_v = v, best = g;
  }
  double lo = std::max(kGammaLo, best - step), hi = std::min(kGammaHi, best + step);
  const double r = 0.5 * (std::sqrt(5.0) - 1);
  double x1 = hi - r * (hi - lo), x2 = lo + r * (hi - lo);
  double f1 = total_sse(cells, x1), f2 = total_sse(cells, x2);
  for (int it = 0; it < 40; ++it) {
    if (f1 < f2) hi = x2, x2 = x1, f2 = f1, x1 = hi - r * (hi - lo), f1 = total_sse(cells, x1);
    else lo = x1, x1 = x2, f1 = f2, x2 = lo + r * (hi - lo), f2 = total_sse(cells, x2);
  }
  const double g = 0.5 * (lo + hi);
  return total_sse(cells, g) <= best_v ? g : best;
}

// Empty when the cells can place γ, else why not.
std::string too_few(const std::vector<Cell>& cells, int n_points) {
  if (cells.empty()) return "no cell of runs with the same N and D has 3 or more distinct G";
  if (n_points < 2 * int(cells.size()) + 2)
    return "the cells hold " + std::to_string(n_points) + " points for " + std::to_string(2 * cells.size() + 1) +
           " coefficients (an offset and an amplitude per cell, and gamma); need one more";
  return "";
}

std::string fmt(const char* f, double x, double y = 0, double z = 0) {
  char b[256];
  std::snprintf(b, sizeof b, f, x, y, z);
  return b;
}

}  // namespace

GProfile fit_g_profile(const std::vector<FitPoint>& pts, const BootstrapOptions& bo) {
  GProfile r;
  const auto cells = make_cells(pts, &r.points, &r.runs);
  r.cells = int(cells.size());
  r.message = too_few(cells, r.points);
  if (!r.message.empty()) return r;
  r.gamma = best_gamma(cells);
  r.on_bound = r.gamma - kGammaLo < 1e-3 || kGammaHi - r.gamma < 1e-3;
  r.rmse_log = std::sqrt(total_sse(cells, r.gamma) / r.points);  // weights 1 unless --points sets them
  for (const auto& c : cells) {
    double m, s;
    cell_fit(c, r.gamma, &m, &s);
    r.mean_gain += s * (std::pow(c.Gmin, -r.gamma) - std::pow(c.Gmax, -r.gamma));
  }
  r.mean_gain /= double(cells.size());
  r.ok = true;

  if (bo.replicates > 0) {
    // Cells are the resampled units: a replicate draws round(fraction · cells)
    // cells with replacement (a cell drawn twice counts twice, which doubles
    // its squared residuals exactly as two identical cells would).
    std::vector<FitPoint> by_cell;
    int id = 0;
    for (const auto& c : cells) {
      for (size_t i = 0; i < c.y.size(); ++i) {
        FitPoint p;
        p.N = double(id), p.D = 1, p.G = std::exp(c.logG[i]), p.loss = std::exp(c.y[i]), p.weight = c.w[i];
        p.group = id;
        by_cell.push_back(p);
      }
      ++id;
    }
    const ReplicateDrawer drawer(by_cell, bo.fraction, bo.seed);
    std::vector<double> gs;
    r.replicate_gamma.assign(size_t(bo.replicates), std::numeric_limits<double>::quiet_NaN());
    for (int i = 0; i < bo.replicates; ++i) {
      int np = 0, nr = 0;
      const auto c = make_cells(drawer.draw(i), &np, &nr);
      if (too_few(c, np).empty()) gs.push_back(r.replicate_gamma[size_t(i)] = best_gamma(c));
    }
    r.replicates = bo.replicates;
    r.succeeded = int(gs.size());
    r.has_interval = r.succeeded >= 10;
    r.interval = interval_of("gamma", gs);
    if (r.succeeded >= 20) r.bimodality = bimodality_coefficient(gs);
  }

  const auto& iv = r.interval;
  if (r.on_bound)
    r.verdict = fmt("gamma = %.3g sits on the search bound [0.01, 3]: not identified", r.gamma);
  else if (!r.has_interval)
    r.verdict = "no bootstrap interval (--bootstrap 0, or fewer than 10 usable refits): not checked";
  else if (iv.lo < 0.5 * r.gamma || iv.hi > 1.5 * r.gamma)
    r.verdict = fmt("95 %% interval [%.3g, %.3g] reaches beyond +-50 %% of gamma = %.3g: not identified", iv.lo,
                    iv.hi, r.gamma);
  else if (r.bimodality > 5.0 / 9.0)
    r.verdict = fmt("bootstrap distribution looks bimodal (Sarle's coefficient %.3f > 5/9): not identified",
                    r.bimodality);
  else {
    r.identified = true;
    r.verdict = fmt("identified: 95 %% interval [%.3g, %.3g] within +-50 %% of gamma = %.3g", iv.lo, iv.hi, r.gamma);
  }
  return r;
}

}  // namespace finemoe::analysis
