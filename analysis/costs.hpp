// Ceres cost functors: one per law form, on log-loss residuals.
//
// Both laws are written in the logsumexp parametrisation of Chinchilla's
// Approach 3: every positive coefficient is exp(θ), so
//   log L_pred = LSE(lc, la − α·log N, lb − β·log D [, lg − γ·log G − α·log N])
// which keeps a, b, c, g positive, makes the residual smooth in θ and
// conditions the problem far better than fitting the raw coefficients.
// Parameter blocks (shared so the Chinchilla form is the fine law without the
// granularity block):
//   core[4] = {la, α, lb, β}     gran[2] = {lg, γ}     lc[1] = {log c}
#pragma once
#include <ceres/ceres.h>

#include <cmath>

namespace finemoe::analysis {

template <typename T>
T logsumexp(const T* x, int n) {
  using std::exp;
  using std::log;
  T m = x[0];
  for (int i = 1; i < n; ++i)
    if (x[i] > m) m = x[i];
  T s = T(0);
  for (int i = 0; i < n; ++i) s += exp(x[i] - m);
  return m + log(s);
}

// Residual log L_pred − log L_obs of the fine-grained law.
struct FineLawResidual {
  double logN, logD, logG, logL;
  template <typename T>
  bool operator()(const T* core, const T* gran, const T* lc, T* r) const {
    T terms[4] = {lc[0], core[0] - core[1] * logN, core[2] - core[3] * logD,
                  gran[0] - gran[1] * logG - core[1] * logN};
    r[0] = logsumexp(terms, 4) - logL;
    return true;
  }
  static ceres::CostFunction* create(double N, double D, double G, double L) {
    return new ceres::AutoDiffCostFunction<FineLawResidual, 1, 4, 2, 1>(
        new FineLawResidual{std::log(N), std::log(D), std::log(G), std::log(L)});
  }
};

// Residual of the Chinchilla form (dense runs, or one fixed G).
struct ChinchillaResidual {
  double logN, logD, logL;
  template <typename T>
  bool operator()(const T* core, const T* lc, T* r) const {
    T terms[3] = {lc[0], core[0] - core[1] * logN, core[2] - core[3] * logD};
    r[0] = logsumexp(terms, 3) - logL;
    return true;
  }
  static ceres::CostFunction* create(double N, double D, double L) {
    return new ceres::AutoDiffCostFunction<ChinchillaResidual, 1, 4, 1>(
        new ChinchillaResidual{std::log(N), std::log(D), std::log(L)});
  }
};

// The tiny L2 ("weight decay") on the parameters: residual sqrt(λ)·θ_k.
template <int K>
struct L2Prior {
  double sqrt_lambda;
  template <typename T>
  bool operator()(const T* p, T* r) const {
    for (int k = 0; k < K; ++k) r[k] = T(sqrt_lambda) * p[k];
    return true;
  }
  static ceres::CostFunction* create(double lambda) {
    return new ceres::AutoDiffCostFunction<L2Prior, K, K>(new L2Prior{std::sqrt(lambda)});
  }
};

}  // namespace finemoe::analysis
