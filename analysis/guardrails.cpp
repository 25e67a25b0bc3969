#include "guardrails.hpp"

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <limits>
#include <map>
#include <set>

namespace finemoe::analysis {
namespace {

bool positive_coef(const std::string& n) { return n == "a" || n == "b" || n == "g" || n == "c"; }

std::string fmt(const char* f, double x, double y = 0, double z = 0) {
  char b[256];
  std::snprintf(b, sizeof b, f, x, y, z);
  return b;
}

}  // namespace

double bimodality_coefficient(const std::vector<double>& v) {
  const double n = double(v.size());
  if (v.size() < 4) return std::numeric_limits<double>::quiet_NaN();
  double m = 0;
  for (double x : v) m += x;
  m /= n;
  double m2 = 0, m3 = 0, m4 = 0;
  for (double x : v) {
    const double d = x - m;
    m2 += d * d, m3 += d * d * d, m4 += d * d * d * d;
  }
  m2 /= n, m3 /= n, m4 /= n;
  if (!(m2 > 0)) return 0.0;  // all equal: one mode
  // Sample skewness and excess kurtosis with the usual small-sample corrections.
  const double g1 = m3 / std::pow(m2, 1.5), g2 = m4 / (m2 * m2) - 3.0;
  const double skew = g1 * std::sqrt(n * (n - 1)) / (n - 2);
  const double kurt = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6);
  return (skew * skew + 1) / (kurt + 3 * (n - 1) * (n - 1) / ((n - 2) * (n - 3)));
}

Guardrails check_fit(const std::vector<FitPoint>& pts, const FitOptions& fo, const FitResult& fit,
                     const BootstrapResult* boot, double entropy_rate) {
  Guardrails g;
  if (!fit.ok) return g;
  const bool fine = fo.form == LawForm::Fine;
  const auto names = law_param_names();
  const auto vals = law_values(fit.law);
  auto free_param = [&](const std::string& n) {
    if (n == "c" && fo.fix_c) return false;
    if (n == "gamma" && fo.fix_gamma) return false;  // held: its interval is the G profile's (analyze.cpp flags it)
    return fine || (n != "g" && n != "gamma");
  };
  std::set<std::string> weak;  // flagged coefficients, for the suggestions

  // Solver box (fit.cpp set_bounds), LM only.
  if (fo.solver == SolverKind::LevenbergMarquardt)
    for (size_t k = 0; k < names.size(); ++k) {
      const std::string& n = names[k];
      if (!free_param(n) || n == "c") continue;
      const double v = vals[k];
      double lo, hi, x = v;
      if (positive_coef(n)) lo = -30, hi = 30, x = std::log(std::max(v, 1e-300));
      else if (n == "gamma") lo = -1, hi = 3;
      else lo = 1e-4, hi = 3;
      if (x - lo < 1e-3 || hi - x < 1e-3) {
        g.flags.push_back({"bound", n, n + " = " + fmt("%.4g", v) + " sits on the solver's bound " +
                                           (positive_coef(n) ? (x - lo < 1e-3 ? "exp(-30)" : "exp(30)")
                                                             : fmt("%g", x - lo < 1e-3 ? lo : hi)) +
                                           ": the data do not place it"});
        weak.insert(n);
      }
    }

  // The L2 prior: refit without it from the full grid plus the fitted law.
  if (fo.l2 > 0) {
    FitOptions o0 = fo;
    o0.l2 = 0;
    o0.extra_starts = {fit.law};
    g.no_prior = fit_law(pts, o0);
    g.prior_checked = g.no_prior.ok;
    if (g.no_prior.ok) {
      const auto v0 = law_values(g.no_prior.law);
      for (size_t k = 0; k < names.size(); ++k) {
        if (!free_param(names[k])) continue;
        const double rel = std::fabs(v0[k] - vals[k]) / std::max(std::fabs(vals[k]), 1e-12);
        if (rel > 0.01) {
          g.flags.push_back({"prior", names[k],
                             names[k] + " = " + fmt("%.4g", vals[k]) + " moves to " + fmt("%.4g", v0[k]) +
                                 fmt(" (%.3g %%) when refitted without the L2 prior (lambda = 0): the prior, not the "
                                     "data, sets it",
                                     100 * rel)});
          weak.insert(names[k]);
        }
      }
    }
  }

  // Bootstrap: width and shape of each coefficient's distribution.
  if (boot && boot->succeeded >= 10) {
    for (size_t k = 0; k < names.size(); ++k) {
      const std::string& n = names[k];
      if (!free_param(n)) continue;
      const auto& iv = boot->intervals[k];
      const double v = vals[k];
      if (positive_coef(n)) {
        if (!(iv.lo > 0) || iv.hi / iv.lo > 10) {
          g.flags.push_back({"not_identified", n,
                             n + fmt(" = %.4g: 95 %% interval [%.3g, %.3g] spans ", v, iv.lo, iv.hi) +
                                 (iv.lo > 0 ? fmt("%.1f decades", std::log10(iv.hi / iv.lo)) : std::string("zero")) +
                                 " (more than one): not identified by these runs"});
          weak.insert(n);
        }
      } else if (iv.lo < v - 0.5 * std::fabs(v) || iv.hi > v + 0.5 * std::fabs(v)) {
        g.flags.push_back({"not_identified", n,
                           n + fmt(" = %.4g: 95 %% interval [%.3g, %.3g] reaches beyond +-50 %% of the value: ", v,
                                   iv.lo, iv.hi) +
                               "not identified by these runs"});
        weak.insert(n);
      }
      if (boot->succeeded >= 20) {
        std::vector<double> x;
        for (const auto& l : boot->laws) {
          const double y = law_values(l)[k];
          x.push_back(positive_coef(n) ? std::log(std::max(y, 1e-300)) : y);
        }
        const double bc = bimodality_coefficient(x);
        if (bc > 5.0 / 9.0) {
          g.flags.push_back({"bimodal", n,
                             n + fmt(": bootstrap distribution looks bimodal (Sarle's coefficient %.3f > 5/9; median "
                                     "%.4g vs fitted %.4g): the runs admit distinct solutions",
                                     bc, iv.median, v)});
          weak.insert(n);
        }
      }
    }
  }

  // Floor: c below the data's own entropy rate.
  if (!fo.fix_c && std::isfinite(entropy_rate)) {
    const int kc = 6;  // law_param_names: a alpha b beta g gamma c
    const bool have_iv = boot && boot->succeeded >= 10;
    const double top = have_iv ? boot->intervals[kc].hi : fit.law.c;
    if (top < entropy_rate) {
      g.flags.push_back({"below_floor", "c",
                         fmt("c = %.4g is below the data's entropy rate %.4f nats/token (the true irreducible loss)",
                             fit.law.c, entropy_rate) +
                             (have_iv ? fmt(" beyond its 95 %% interval (upper end %.4g)", top)
                                      : std::string(" (no bootstrap interval to compare)")) +
                             ": the fit trades c against the power-law terms"});
      weak.insert("c");
    }
  }

  // Misfit: residuals well above the points' own noise.
  {
    std::vector<double> se;
    double ss = 0;
    std::map<double, std::pair<double, int>> by_D;  // D -> (sum of residuals, count)
    for (const auto& p : pts) {
      const double r = p.loss - fit.law.loss(p.N, p.D, p.G);
      ss += r * r;
      auto& b = by_D[p.D];
      b.first += r, b.second += 1;
      if (p.loss_se > 0) se.push_back(p.loss_se);
    }
    if (se.size() >= 5) {
      std::nth_element(se.begin(), se.begin() + long(se.size() / 2), se.end());
      const double med = se[se.size() / 2], rmse = std::sqrt(ss / double(pts.size()));
      if (rmse > 2 * med) {
        std::string trend;
        if (by_D.size() >= 3 && by_D.size() <= 12) {
          trend = "; mean residual (observed - law) by D:";
          for (const auto& [D, b] : by_D) trend += fmt(" %.3g: %+.3f,", D, b.first / b.second);
          trend.pop_back();
        }
        g.flags.push_back({"misfit", "fit",
                           fmt("the law misses the runs by RMSE %.3g nats, %.1fx the median standard error of their "
                               "final losses (%.3g): the residuals are structure, not noise, and the coefficients "
                               "describe a curve the runs do not follow",
                               rmse, rmse / med, med) +
                               trend});
        g.suggestions.push_back(
            "longer runs (the law describes the power-law regime; short runs at small scale are still before it), "
            "or check the residuals in fit_vs_observed");
      }
    }
  }

  // What would identify the flagged coefficients.
  std::set<double> Ns, Ds, Gs;
  for (const auto& p : pts) Ns.insert(p.N), Ds.insert(p.D), Gs.insert(p.G);
  auto any = [&](std::initializer_list<const char*> ps) {
    for (const char* p : ps)
      if (weak.count(p)) return true;
    return false;
  };
  if (any({"a", "alpha"}))
    g.suggestions.push_back(fmt("more model sizes over a wider range of N (these runs have %g distinct N)", double(Ns.size())));
  if (any({"b", "beta"}))
    g.suggestions.push_back(fmt("more token budgets over a wider range of D (these runs have %g distinct D)", double(Ds.size())));
  if (fine && any({"g", "gamma"}))
    g.suggestions.push_back(fmt("more granularities G (these runs have %g distinct G)", double(Gs.size())));
  if (any({"c"}))
    g.suggestions.push_back(std::isfinite(entropy_rate)
                                ? "`--fix-c entropy` (c at the data's entropy rate), or larger and longer runs"
                                : "`--fix-c VALUE` with a known floor, or larger and longer runs");
  return g;
}

}  // namespace finemoe::analysis
