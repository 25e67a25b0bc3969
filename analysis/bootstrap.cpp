#include "bootstrap.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "finemoe/error.hpp"
#include "g_profile.hpp"

namespace finemoe::analysis {
namespace {

std::map<int, std::vector<FitPoint>> by_group(const std::vector<FitPoint>& pts) {
  std::map<int, std::vector<FitPoint>> g;
  for (const auto& p : pts) g[p.group].push_back(p);
  return g;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t i = size_t(std::floor(pos));
  double f = pos - double(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

// --fix-gamma profile: a fit on a subset of the runs (the holdout's training
// set) takes that subset's own G profile as gamma. False when it cannot be fitted.
bool set_profile_gamma(const std::vector<FitPoint>& pts, FitOptions& o) {
  if (!o.gamma_from_profile) return true;
  BootstrapOptions none;
  none.replicates = 0;
  const GProfile g = fit_g_profile(pts, none);
  if (!g.ok) return false;
  o.gamma_value = g.gamma;
  return true;
}

}  // namespace

ReplicateDrawer::ReplicateDrawer(const std::vector<FitPoint>& pts, double fraction, uint64_t seed) : seed_(seed) {
  for (auto& [id, v] : by_group(pts)) runs_.push_back(std::move(v));
  m_ = std::max(1, int(std::lround(fraction * double(runs_.size()))));
}

std::vector<FitPoint> ReplicateDrawer::draw(int i) const {
  std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(i) + 1);
  std::uniform_int_distribution<int> pick(0, int(runs_.size()) - 1);
  std::vector<FitPoint> sample;
  for (int k = 0; k < m_; ++k)
    for (auto p : runs_[size_t(pick(rng))]) {
      p.group = k;  // a run drawn twice counts as two runs
      sample.push_back(p);
    }
  return sample;
}

ParamInterval interval_of(const std::string& name, const std::vector<double>& v) {
  ParamInterval pi;
  pi.name = name;
  if (v.empty()) return pi;
  pi.lo = percentile(v, 0.025);
  pi.hi = percentile(v, 0.975);
  pi.median = percentile(v, 0.5);
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  for (double x : v) var += (x - mean) * (x - mean);
  pi.sd = v.size() > 1 ? std::sqrt(var / double(v.size() - 1)) : 0.0;
  return pi;
}

BootstrapResult bootstrap_fit(const std::vector<FitPoint>& pts, const FitOptions& fo, const Law& full_fit,
                              const BootstrapOptions& bo) {
  BootstrapResult res;
  res.requested = bo.replicates;
  const ReplicateDrawer drawer(pts, bo.fraction, bo.seed);
  FitOptions o = fo;
  o.full_grid = false;
  o.extra_starts = {full_fit};

  std::vector<Law> laws(bo.replicates);
  std::vector<char> ok(bo.replicates, 0);
  std::atomic<int> next{0}, done{0};
  std::mutex print_mu;
  auto worker = [&]() {
    for (int i; (i = next++) < bo.replicates;) {
      const std::vector<FitPoint> sample = drawer.draw(i);
      FitOptions oi = o;
      bool usable = true;
      if (o.gamma_from_profile) {
        // The G profile's own replicate i (cells resampled; fit.hpp).
        usable = size_t(i) < o.gamma_replicates.size() && std::isfinite(o.gamma_replicates[size_t(i)]);
        if (usable) oi.gamma_value = o.gamma_replicates[size_t(i)];
      }
      if (usable) {
        FitResult r = fit_law(sample, oi);
        if (r.ok) laws[i] = r.law, ok[i] = 1;
      }
      int d = ++done;
      if (bo.progress) {
        std::lock_guard<std::mutex> lk(print_mu);
        std::fprintf(stderr, "\rbootstrap: %d/%d refits", d, bo.replicates);
        if (d == bo.replicates) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      }
    }
  };
  const int nt = std::max(1, std::min(bo.threads, bo.replicates));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();

  for (int i = 0; i < bo.replicates; ++i)
    if (ok[i]) res.laws.push_back(laws[i]);
  res.succeeded = int(res.laws.size());
  const auto names = law_param_names();
  for (size_t k = 0; k < names.size(); ++k) {
    std::vector<double> v;
    for (const auto& l : res.laws) v.push_back(law_values(l)[k]);
    res.intervals.push_back(interval_of(names[k], v));
  }
  return res;
}

HoldoutResult holdout_fit(const std::vector<FitPoint>& pts, const std::string& rule, const FitOptions& fo,
                          uint64_t seed) {
  HoldoutResult h;
  h.rule = rule;
  auto groups = by_group(pts);
  // Per run: its final point is its largest-D point.
  std::map<int, FitPoint> final_pt;
  for (const auto& [id, v] : groups)
    final_pt[id] = *std::max_element(v.begin(), v.end(), [](auto& a, auto& b) { return a.D < b.D; });
  std::set<int> test;
  if (rule == "largest-n" || rule == "largest-d") {
    const bool n_rule = rule == "largest-n";
    double mx = 0;
    for (const auto& [id, p] : final_pt) mx = std::max(mx, n_rule ? p.N : p.D);
    for (const auto& [id, p] : final_pt)
      if ((n_rule ? p.N : p.D) >= mx * (1 - 1e-9)) test.insert(id);
  } else if (rule.rfind("random:", 0) == 0) {
    char* end = nullptr;
    double frac = std::strtod(rule.c_str() + 7, &end);
    if (*end != '\0' || !(frac > 0 && frac < 1))
      throw ConfigError("--holdout: random:FRAC needs 0 < FRAC < 1, got '" + rule + "'");
    std::vector<int> ids;
    for (const auto& [id, p] : final_pt) ids.push_back(id);
    std::mt19937_64 rng(seed ^ 0xB0B0B0B0ull);
    std::shuffle(ids.begin(), ids.end(), rng);
    size_t k = std::max<size_t>(1, size_t(std::lround(frac * double(ids.size()))));
    k = std::min(k, ids.size() - (ids.size() > 1 ? 1 : 0));
    test.insert(ids.begin(), ids.begin() + k);
  } else if (rule.rfind("n-above:", 0) == 0 || rule.rfind("d-above:", 0) == 0 || rule.rfind("f-above:", 0) == 0) {
    // Threshold: train on the runs whose final N (D, F) is <= X, test on those above.
    char* end = nullptr;
    const double x = std::strtod(rule.c_str() + 8, &end);
    if (rule.size() == 8 || *end != '\0' || !std::isfinite(x) || !(x > 0))
      throw ConfigError("--holdout: " + rule.substr(0, 8) + "X needs a number X > 0, got '" + rule + "'");
    const char k = rule[0];
    for (const auto& [id, p] : final_pt)
      if ((k == 'n' ? p.N : k == 'd' ? p.D : p.F) > x) test.insert(id);
  } else {
    throw ConfigError("--holdout: expected largest-n, largest-d, random:FRAC, n-above:X, d-above:X or f-above:X, got '" +
                      rule + "'");
  }
  std::vector<FitPoint> train;
  for (const auto& [id, v] : groups) {
    auto& dst = test.count(id) ? h.test_points : train;
    dst.insert(dst.end(), v.begin(), v.end());
  }
  h.test_runs = int(test.size());
  h.train_runs = int(groups.size()) - h.test_runs;
  if (h.train_runs == 0 || h.test_runs == 0) {
    h.message = "holdout rule '" + rule + "' leaves no runs to " + (h.train_runs == 0 ? "train on" : "test on");
    return h;
  }
  FitOptions ot = fo;
  if (!set_profile_gamma(train, ot)) {
    h.message = "--fix-gamma profile: the G profile of the " + std::to_string(h.train_runs) +
                " training runs cannot be fitted";
    return h;
  }
  h.train_fit = fit_law(train, ot);
  if (!h.train_fit.ok) {
    h.message = "fit on the " + std::to_string(h.train_runs) + " training runs failed: " + h.train_fit.message;
    return h;
  }
  FitResult ev;
  evaluate_law(h.train_fit.law, h.test_points, fo.huber_delta, ev);
  h.test_predicted = ev.predicted;
  h.rmse = ev.rmse;
  h.mare = ev.mare;
  h.ok = true;
  return h;
}

}  // namespace finemoe::analysis
