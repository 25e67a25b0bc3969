#include "optimal.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"

namespace finemoe::analysis {
namespace {

// Minimise f over [lo, hi] (f continuous, not necessarily unimodal globally):
// a log-spaced scan finds the best bracket, golden section refines it.
double minimise_1d(const std::function<double(double)>& f, double lo, double hi, int scan = 2000) {
  double best_x = lo, best_f = std::numeric_limits<double>::infinity();
  int best_i = 0;
  const double step = (hi - lo) / scan;
  for (int i = 0; i <= scan; ++i) {
    double x = lo + step * i, v = f(x);
    if (v < best_f) best_f = v, best_x = x, best_i = i;
  }
  double a = lo + step * std::max(0, best_i - 1), b = lo + step * std::min(scan, best_i + 1);
  const double r = (std::sqrt(5.0) - 1) / 2;
  double c = b - r * (b - a), d = a + r * (b - a), fc = f(c), fd = f(d);
  for (int it = 0; it < 200 && b - a > 1e-13 * (1 + std::fabs(a)); ++it) {
    if (fc < fd) b = d, d = c, fd = fc, c = b - r * (b - a), fc = f(c);
    else a = c, c = d, fc = fd, d = a + r * (b - a), fd = f(d);
  }
  double x = 0.5 * (a + b);
  return f(x) <= best_f ? x : best_x;
}

double parse_num(const std::string& s, const std::string& spec) {
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(x) || x <= 0)
    throw ConfigError("--optimal: '" + s + "' in '" + spec + "' is not a positive number");
  return x;
}

}  // namespace

OptimalPoint optimal_for_g(const Law& law, double F, double G, const OptimalOptions& o) {
  auto loss_at = [&](double log_nb) {
    double nb = std::exp(log_nb), d = o.aspect * nb;
    double D = F / law_flops_per_token(d, nb, o.E, G);
    return law.loss(law_N(d, nb, o.E), D, G);
  };
  const double lo = std::log(o.min_blocks), hi = std::log(o.max_blocks);
  const double x = minimise_1d(loss_at, lo, hi);
  OptimalPoint p;
  p.budget = F;
  p.G = G;
  p.n_blocks = std::exp(x);
  p.d_model = o.aspect * p.n_blocks;
  p.N_active = law_N_active(p.d_model, p.n_blocks);
  p.N_total = law_N(p.d_model, p.n_blocks, o.E);
  p.D = F / law_flops_per_token(p.d_model, p.n_blocks, o.E, G);
  p.tokens_per_active = p.D / p.N_active;
  p.loss = law.loss(p.N_total, p.D, G);
  p.at_range_edge = (x - lo) < 1e-3 || (hi - x) < 1e-3;
  return p;
}

double dense_optimal_loss(const Law& dense, double F, double* N_opt) {
  auto loss_at = [&](double logN) {
    double N = std::exp(logN);
    return dense.loss(N, F / (6.0 * N), 1.0);
  };
  // N from 1e3 to F/6 (at least one token): the whole admissible range.
  double x = minimise_1d(loss_at, std::log(1e3), std::log(std::max(F / 6.0, 1e4)), 4000);
  if (N_opt) *N_opt = std::exp(x);
  return loss_at(x);
}

double dense_compute_for_loss(const Law& dense, double loss) {
  // Optimal dense loss decreases monotonically with F: bisect on log F.
  double lo = std::log(1e6), hi = std::log(1e40);
  if (dense_optimal_loss(dense, std::exp(hi)) > loss) return std::numeric_limits<double>::infinity();
  if (dense_optimal_loss(dense, std::exp(lo)) <= loss) return std::exp(lo);
  for (int i = 0; i < 100 && hi - lo > 1e-10; ++i) {
    double m = 0.5 * (lo + hi);
    (dense_optimal_loss(dense, std::exp(m)) > loss ? lo : hi) = m;
  }
  return std::exp(0.5 * (lo + hi));
}

OptimalRow optimal_for_budget(const Law& law, double F, const OptimalOptions& o, const Law* dense) {
  OptimalRow row;
  for (double G : o.granularities) {
    row.per_g.push_back(optimal_for_g(law, F, G, o));
    if (row.per_g.size() == 1 || row.per_g.back().loss < row.best.loss) row.best = row.per_g.back();
  }
  if (dense) {
    row.dense_loss = dense_optimal_loss(*dense, F);
    row.dense_compute = dense_compute_for_loss(*dense, row.best.loss);
    row.multiplier = row.dense_compute / F;
    row.multiplier_g1 = std::numeric_limits<double>::quiet_NaN();
    for (const auto& p : row.per_g)
      if (p.G == 1) row.multiplier_g1 = dense_compute_for_loss(*dense, p.loss) / F;
  }
  return row;
}

std::vector<double> parse_budgets(const std::string& spec) {
  std::vector<double> out;
  if (spec.rfind("log:", 0) == 0) {
    std::vector<std::string> parts;
    std::stringstream ss(spec.substr(4));
    std::string it;
    while (std::getline(ss, it, ':')) parts.push_back(it);
    if (parts.size() != 3) throw ConfigError("--optimal: expected log:FMIN:FMAX:COUNT, got '" + spec + "'");
    double a = parse_num(parts[0], spec), b = parse_num(parts[1], spec);
    int n = int(parse_num(parts[2], spec));
    if (n < 1 || b < a) throw ConfigError("--optimal: need FMIN <= FMAX and COUNT >= 1 in '" + spec + "'");
    for (int i = 0; i < n; ++i) out.push_back(n == 1 ? a : std::exp(std::log(a) + (std::log(b) - std::log(a)) * i / (n - 1)));
    return out;
  }
  std::stringstream ss(spec);
  std::string it;
  while (std::getline(ss, it, ',')) out.push_back(parse_num(it, spec));
  if (out.empty()) throw ConfigError("--optimal: no budgets in '" + spec + "'");
  return out;
}

}  // namespace finemoe::analysis
