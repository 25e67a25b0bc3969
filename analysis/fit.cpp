#include "fit.hpp"

#include <ceres/ceres.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <cstdio>
#include <cstdlib>

#include "costs.hpp"

namespace finemoe::analysis {
namespace {

// ---- solver options: the one place they are set ------------------------------
ceres::Solver::Options lm_options(const FitOptions& o) {
  ceres::Solver::Options s;
  s.minimizer_type = ceres::TRUST_REGION;
  s.trust_region_strategy_type = ceres::LEVENBERG_MARQUARDT;
  s.linear_solver_type = ceres::DENSE_QR;
  s.max_num_iterations = o.max_iterations;
  s.function_tolerance = 1e-10;
  s.gradient_tolerance = 1e-10;
  s.parameter_tolerance = 1e-9;
  s.num_threads = 1;  // parallelism is across bootstrap refits, not inside one
  s.logging_type = ceres::SILENT;
  s.minimizer_progress_to_stdout = false;
  return s;
}
ceres::GradientProblemSolver::Options bfgs_options(const FitOptions& o) {
  ceres::GradientProblemSolver::Options s;
  s.line_search_direction_type = ceres::BFGS;
  s.max_num_iterations = o.max_iterations * 5;  // BFGS steps are cheaper and smaller
  s.function_tolerance = 1e-12;
  s.gradient_tolerance = 1e-12;
  s.parameter_tolerance = 1e-10;
  s.logging_type = ceres::SILENT;
  return s;
}
// Box for LM: keeps exponents in a physical range and exp() finite.
void set_bounds(ceres::Problem& p, double* core, double* gran, bool fine) {
  for (int k : {0, 2}) {
    p.SetParameterLowerBound(core, k, -30.0);
    p.SetParameterUpperBound(core, k, 30.0);
  }
  for (int k : {1, 3}) {
    p.SetParameterLowerBound(core, k, 1e-4);
    p.SetParameterUpperBound(core, k, 3.0);
  }
  if (fine) {
    p.SetParameterLowerBound(gran, 0, -30.0);
    p.SetParameterUpperBound(gran, 0, 30.0);
    p.SetParameterLowerBound(gran, 1, -1.0);
    p.SetParameterUpperBound(gran, 1, 3.0);
  }
}

double huber(double r, double delta) {
  double a = std::fabs(r);
  return a <= delta ? 0.5 * r * r : delta * (a - 0.5 * delta);
}

// θ in the block layout of costs.hpp.
struct Theta {
  double core[4];  // la, α, lb, β
  double gran[2];  // lg, γ
  double lc[1];    // log c
};
Theta theta_from_law(const Law& l) {
  auto lg = [](double x) { return std::log(std::max(x, 1e-12)); };
  return Theta{{lg(l.a), l.alpha, lg(l.b), l.beta}, {lg(l.g), l.gamma}, {lg(l.c)}};
}
Law law_from_theta(const Theta& t, LawForm f) {
  Law l;
  l.a = std::exp(t.core[0]);
  l.alpha = t.core[1];
  l.b = std::exp(t.core[2]);
  l.beta = t.core[3];
  if (f == LawForm::Fine) {
    l.g = std::exp(t.gran[0]);
    l.gamma = t.gran[1];
  }
  l.c = std::exp(t.lc[0]);
  return l;
}

// BFGS: the least-squares problem (Huber-robustified residuals + L2 blocks)
// as one smooth function of all parameter blocks, via Problem::Evaluate.
// A fixed block keeps its value and gets a zero gradient.
class ProblemObjective : public ceres::FirstOrderFunction {
 public:
  struct Block {
    double* ptr;
    int size;
    unsigned fixed;  // bit i set: element i keeps its value (a fixed coefficient)
    bool is_fixed(int i) const { return (fixed >> i) & 1u; }
  };
  ProblemObjective(ceres::Problem* p, std::vector<Block> blocks) : p_(p), blocks_(std::move(blocks)) {
    for (const auto& b : blocks_) {
      n_ += b.size;
      ptrs_.push_back(b.ptr);
    }
  }
  bool Evaluate(const double* x, double* cost, double* gradient) const override {
    int k = 0;
    for (const auto& b : blocks_)
      for (int i = 0; i < b.size; ++i, ++k)
        if (!b.is_fixed(i)) b.ptr[i] = x[k];
    ceres::Problem::EvaluateOptions eo;
    eo.parameter_blocks = ptrs_;
    eo.num_threads = 1;
    std::vector<double> g;
    if (!p_->Evaluate(eo, cost, nullptr, gradient ? &g : nullptr, nullptr)) return false;
    if (!std::isfinite(*cost)) return false;
    if (gradient) {
      k = 0;
      for (const auto& b : blocks_)
        for (int i = 0; i < b.size; ++i, ++k) gradient[k] = b.is_fixed(i) ? 0.0 : g[k];
    }
    return true;
  }
  int NumParameters() const override { return n_; }

 private:
  ceres::Problem* p_;
  std::vector<Block> blocks_;
  std::vector<double*> ptrs_;
  int n_ = 0;
};

// One local solve from `start`; returns the final Ceres cost (½Σρ + L2) or +inf.
double solve_from(const std::vector<FitPoint>& pts, const FitOptions& o, Theta& t) {
  const bool fine = o.form == LawForm::Fine;
  ceres::Problem::Options po;
  ceres::Problem problem(po);
  for (const auto& p : pts) {
    ceres::LossFunction* loss = new ceres::HuberLoss(o.huber_delta);
    if (p.weight != 1.0) loss = new ceres::ScaledLoss(loss, p.weight, ceres::TAKE_OWNERSHIP);
    if (fine)
      problem.AddResidualBlock(FineLawResidual::create(p.N, p.D, p.G, p.loss), loss, t.core, t.gran, t.lc);
    else
      problem.AddResidualBlock(ChinchillaResidual::create(p.N, p.D, p.loss), loss, t.core, t.lc);
  }
  if (o.l2 > 0) {
    problem.AddResidualBlock(L2Prior<4>::create(o.l2), nullptr, t.core);
    if (fine) problem.AddResidualBlock(L2Prior<2>::create(o.l2), nullptr, t.gran);
    if (!o.fix_c) problem.AddResidualBlock(L2Prior<1>::create(o.l2), nullptr, t.lc);
  }
  if (o.fix_c) {
    t.lc[0] = std::log(o.c_value);
    problem.SetParameterBlockConstant(t.lc);
  }
  const bool fix_gamma = fine && o.fix_gamma;
  if (fix_gamma) t.gran[1] = o.gamma_value;
  double cost = std::numeric_limits<double>::infinity();
  if (o.solver == SolverKind::LevenbergMarquardt) {
    set_bounds(problem, t.core, t.gran, fine);
    // gamma held: only log g moves in the granularity block (LM path only:
    // BFGS evaluates the ambient gradient and masks it below).
    if (fix_gamma) problem.SetManifold(t.gran, new ceres::SubsetManifold(2, {1}));
    ceres::Solver::Summary sum;
    ceres::Solve(lm_options(o), &problem, &sum);
    if (sum.IsSolutionUsable()) cost = sum.final_cost;
  } else {
    std::vector<ProblemObjective::Block> blocks = {{t.core, 4, 0u}};
    if (fine) blocks.push_back({t.gran, 2, fix_gamma ? 2u : 0u});
    blocks.push_back({t.lc, 1, o.fix_c ? 1u : 0u});
    std::vector<double> x;
    for (const auto& b : blocks) x.insert(x.end(), b.ptr, b.ptr + b.size);
    const std::vector<double> x0 = x;
    ceres::GradientProblem gp(new ProblemObjective(&problem, blocks));
    ceres::GradientProblemSolver::Summary sum;
    ceres::Solve(bfgs_options(o), gp, x.data(), &sum);
    int k = 0;
    for (const auto& b : blocks)
      for (int i = 0; i < b.size; ++i, ++k)
        if (!b.is_fixed(i)) b.ptr[i] = x[k];
    if (sum.IsSolutionUsable() && std::isfinite(sum.final_cost)) cost = sum.final_cost;
  }
  for (double v : {t.core[0], t.core[1], t.core[2], t.core[3], t.gran[0], t.gran[1], t.lc[0]})
    if (!std::isfinite(v)) return std::numeric_limits<double>::infinity();
  return cost;
}

std::vector<Theta> start_grid(const std::vector<FitPoint>& pts, const FitOptions& o) {
  double lmin = std::numeric_limits<double>::infinity();
  for (const auto& p : pts) lmin = std::min(lmin, p.loss);
  // Full grid (main fits): 9 exponent pairs × 4 (a, b) × 2 c × 2 (g, γ) = 144
  // starts for the fine law, 72 for Chinchilla's. Coarse grid (bootstrap
  // refits, which also start from the full-sample optimum): 4 starts.
  std::vector<double> exps, logs, lcs;
  std::vector<std::pair<double, double>> grans;
  if (o.full_grid) {
    exps = {0.1, 0.3, 0.6};
    logs = {1.0, 4.0};
    lcs = {std::log(0.3 * lmin), std::log(0.8 * lmin)};
    grans = {{0.0, 0.3}, {2.0, 0.7}};
  } else {
    exps = {0.15, 0.5};
    logs = {3.0};
    lcs = {std::log(0.6 * lmin)};
    grans = {{1.0, 0.5}};
  }
  if (o.form != LawForm::Fine) grans = {{0.0, 0.0}};
  std::vector<Theta> out;
  for (double al : exps)
    for (double be : exps)
      for (double la : logs)
        for (double lb : logs)
          for (double lc : lcs)
            for (auto [lg, ga] : grans) out.push_back(Theta{{la, al, lb, be}, {lg, ga}, {lc}});
  for (const auto& l : o.extra_starts) {
    Theta t = theta_from_law(l);
    if (o.form == LawForm::Fine && !l.has_granularity()) t.gran[0] = 0.0, t.gran[1] = 0.5;
    out.push_back(t);
  }
  return out;
}

}  // namespace

const char* solver_name(SolverKind s) { return s == SolverKind::Bfgs ? "bfgs" : "levenberg-marquardt"; }
const char* form_name(LawForm f) { return f == LawForm::Fine ? "fine-grained" : "chinchilla"; }
int n_free_params(const FitOptions& o) {
  const bool fine = o.form == LawForm::Fine;
  return (fine ? 7 : 5) - (o.fix_c ? 1 : 0) - (fine && o.fix_gamma ? 1 : 0);
}

std::string identifiability_problem(const std::vector<FitPoint>& pts, const FitOptions& o) {
  if (pts.empty()) return "no usable runs";
  std::set<double> Ns, Ds, Gs;
  std::set<int> groups;
  for (const auto& p : pts) Ns.insert(p.N), Ds.insert(p.D), Gs.insert(p.G), groups.insert(p.group);
  const int k = n_free_params(o);
  if (int(pts.size()) <= k)
    return "the " + std::string(form_name(o.form)) + " law has " + std::to_string(k) + " free coefficients but only " +
           std::to_string(pts.size()) + " data point(s) from " + std::to_string(groups.size()) +
           " run(s); need at least " + std::to_string(k + 1);
  if (Ns.size() < 2) return "all runs have the same N, so the N exponent alpha (and a) cannot be fitted";
  if (Ds.size() < 2) return "all runs have the same D (tokens), so the D exponent beta (and b) cannot be fitted";
  if (o.form == LawForm::Fine && Gs.size() < 2)
    return "all runs have the same G, so the granularity term (g, gamma) cannot be fitted; "
           "use the Chinchilla form (--form chinchilla)";
  if (o.fix_c && !(o.c_value > 0)) return "--fix-c must be > 0";
  if (o.form == LawForm::Fine && o.fix_gamma && !(o.gamma_value > -1 && o.gamma_value <= 3))
    return "--fix-gamma must lie in (-1, 3], the solver's range for gamma";
  return "";
}

void evaluate_law(const Law& law, const std::vector<FitPoint>& pts, double delta, FitResult& r) {
  r.predicted.assign(pts.size(), 0.0);
  double se = 0, sel = 0, are = 0, obj = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    const auto& p = pts[i];
    double pred = law.loss(p.N, p.D, p.G);
    r.predicted[i] = pred;
    double lr = std::log(pred) - std::log(p.loss);
    se += (pred - p.loss) * (pred - p.loss);
    sel += lr * lr;
    are += std::fabs(pred - p.loss) / p.loss;
    obj += p.weight * huber(lr, delta);
  }
  const double n = std::max<size_t>(pts.size(), 1);
  r.rmse = std::sqrt(se / n);
  r.rmse_log = std::sqrt(sel / n);
  r.mare = are / n;
  r.objective = obj;
}

FitResult fit_law(const std::vector<FitPoint>& pts, const FitOptions& o) {
  FitResult r;
  r.message = identifiability_problem(pts, o);
  if (!r.message.empty()) return r;
  const auto starts = start_grid(pts, o);
  double best = std::numeric_limits<double>::infinity();
  Theta best_t{};
  for (const auto& s : starts) {
    Theta t = s;
    double cost = solve_from(pts, o, t);
    ++r.starts;
    if (!std::isfinite(cost)) continue;
    ++r.usable_starts;
    if (cost < best) best = cost, best_t = t;
  }
  if (!std::isfinite(best)) {
    r.message = "the solver found no usable solution from any of " + std::to_string(r.starts) + " starting points";
    return r;
  }
  r.law = law_from_theta(best_t, o.form);
  if (o.fix_c) r.law.c = o.c_value;
  if (o.form == LawForm::Fine && o.fix_gamma) r.law.gamma = o.gamma_value;
  evaluate_law(r.law, pts, o.huber_delta, r);
  r.ok = true;
  return r;
}

}  // namespace finemoe::analysis
