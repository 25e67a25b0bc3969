// Test helpers for the MoE layer: random problems and an independent
// double-precision reference of the whole layer (routing included), written
// as plainly as possible so that it can be trusted by reading it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "finemoe/moe.hpp"
#include "finemoe/rng.hpp"

namespace moetest {

using finemoe::MoEShape;
using finemoe::Routing;

inline MoEShape make_shape(int64_t d, int64_t E, int64_t G, Routing routing, int64_t group = 16,
                           double capacity_factor = 1.0, int64_t top_k = 0) {
  MoEShape s;
  s.d_model = d;
  s.E = E;
  s.G = G;
  s.n_experts = E * G;
  s.d_expert = 4 * d / G;
  s.routing = routing;
  s.group_size = group;
  s.capacity = std::max<int64_t>(1, group / E);  // c = G·group/(E·G)
  s.capacity_factor = capacity_factor;
  s.top_k = top_k > 0 ? top_k : G;
  return s;
}

// Weights of ALL E·G experts (global), inputs and an upstream gradient.
struct Problem {
  MoEShape s;
  int64_t T = 0;
  std::vector<float> x, wr, w1, w2, dout;
};

inline void fill_normal(std::vector<float>& v, size_t n, double scale, finemoe::Rng& rng) {
  v.resize(n);
  for (auto& a : v) a = float(scale * rng.normal());
}

inline Problem make_problem(const MoEShape& s, int64_t T, uint64_t seed, double router_scale = 1.0) {
  Problem p;
  p.s = s;
  p.T = T;
  finemoe::Rng rng(seed);
  const int64_t d = s.d_model, EG = s.n_experts, de = s.d_expert;
  fill_normal(p.x, size_t(T * d), 1.0, rng);
  fill_normal(p.wr, size_t(d * EG), router_scale / std::sqrt(double(d)), rng);
  fill_normal(p.w1, size_t(EG * d * de), 1.0 / std::sqrt(double(d)), rng);
  fill_normal(p.w2, size_t(EG * de * d), 1.0 / std::sqrt(double(de)), rng);
  fill_normal(p.dout, size_t(T * d), 1.0, rng);
  return p;
}

struct RefResult {
  std::vector<double> out;                // [T, d]
  std::vector<std::vector<int64_t>> sel;  // experts of each token, ascending
  std::vector<uint8_t> signature;         // selection bits + ReLU pattern of selected experts
  std::vector<int64_t> tokens_per_expert;
  int64_t dropped = 0;
};

// Double-precision reference of MoELayer::forward with all experts on one rank.
// `bias` [E·G] (token choice only): the top-k is taken over p + bias, the
// combine weights stay p (DeepSeek-V3's selection bias).
inline RefResult ref_forward(const MoEShape& s, int64_t T, const float* x, const float* wr, const float* w1,
                             const float* w2, const float* bias = nullptr) {
  const int64_t d = s.d_model, EG = s.n_experts, de = s.d_expert;
  std::vector<double> P(size_t(T * EG));
  for (int64_t t = 0; t < T; ++t) {
    double m = -1e300;
    for (int64_t e = 0; e < EG; ++e) {
      double l = 0;
      for (int64_t i = 0; i < d; ++i) l += double(x[t * d + i]) * double(wr[i * EG + e]);
      P[size_t(t * EG + e)] = l;
      m = std::max(m, l);
    }
    double z = 0;
    for (int64_t e = 0; e < EG; ++e) z += (P[size_t(t * EG + e)] = std::exp(P[size_t(t * EG + e)] - m));
    for (int64_t e = 0; e < EG; ++e) P[size_t(t * EG + e)] /= z;
  }
  RefResult r;
  r.sel.assign(size_t(T), {});
  r.tokens_per_expert.assign(size_t(EG), 0);
  if (s.routing == Routing::expert_choice) {
    for (int64_t g0 = 0; g0 < T; g0 += s.group_size)
      for (int64_t e = 0; e < EG; ++e) {
        std::vector<int64_t> idx(static_cast<size_t>(s.group_size));
        std::iota(idx.begin(), idx.end(), g0);
        std::stable_sort(idx.begin(), idx.end(),
                         [&](int64_t a, int64_t b) { return P[size_t(a * EG + e)] > P[size_t(b * EG + e)]; });
        for (int64_t j = 0; j < s.capacity; ++j) r.sel[size_t(idx[size_t(j)])].push_back(e);
      }
  } else {
    // Capacity per group of group_size tokens (the last one may be shorter).
    std::vector<int64_t> load(size_t(EG), 0);
    int64_t cap = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (t % s.group_size == 0) {
        std::fill(load.begin(), load.end(), 0);
        const int64_t n = std::min(s.group_size, T - t);
        cap = int64_t(std::ceil(s.capacity_factor * double(n) * double(s.top_k) / double(EG)));
      }
      std::vector<int64_t> idx(static_cast<size_t>(EG));
      std::iota(idx.begin(), idx.end(), 0);
      auto score = [&](int64_t e) { return P[size_t(t * EG + e)] + (bias ? double(bias[e]) : 0.0); };
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score(a) > score(b); });
      for (int64_t j = 0; j < s.top_k; ++j) {
        const int64_t e = idx[size_t(j)];
        if (load[size_t(e)] < cap) {
          ++load[size_t(e)];
          r.sel[size_t(t)].push_back(e);
        } else {
          ++r.dropped;
        }
      }
    }
  }
  r.out.assign(size_t(T * d), 0.0);
  r.signature.assign(size_t(T * EG), 0);
  std::vector<double> h(static_cast<size_t>(de));
  for (int64_t t = 0; t < T; ++t) {
    auto& se = r.sel[size_t(t)];
    std::sort(se.begin(), se.end());
    for (int64_t e : se) {
      r.signature[size_t(t * EG + e)] = 1;
      ++r.tokens_per_expert[size_t(e)];
      for (int64_t j = 0; j < de; ++j) {
        double a = 0;
        for (int64_t i = 0; i < d; ++i) a += double(x[t * d + i]) * double(w1[(e * d + i) * de + j]);
        h[size_t(j)] = a > 0 ? a : 0;
        r.signature.push_back(a > 0);
      }
      const double p = P[size_t(t * EG + e)];
      for (int64_t i = 0; i < d; ++i) {
        double y = 0;
        for (int64_t j = 0; j < de; ++j) y += h[size_t(j)] * double(w2[(e * de + j) * d + i]);
        r.out[size_t(t * d + i)] += p * y;
      }
    }
  }
  return r;
}

// Loss used by the gradient checks: L = Σ out·dout (so ∂L/∂out = dout).
inline double dot_loss(const std::vector<float>& out, const std::vector<float>& dout) {
  double L = 0;
  for (size_t i = 0; i < out.size(); ++i) L += double(out[i]) * double(dout[i]);
  return L;
}

// One central-difference probe of element i of v: evaluates `eval` at
// v[i] + h and v[i] - h, then restores v[i]. eval() returns the loss and
// whether the routing selection is the reference one (a probe that moves a
// token across a selection boundary measures a jump, not a derivative).
struct CentralDiff {
  double plus = 0, minus = 0;  // loss at v[i] + h and at v[i] - h
  double step = 0;             // (v[i] + h) - (v[i] - h) as rounded in float
  bool same = true;            // the selection was the reference one on both sides
};
template <class Eval>
CentralDiff central_diff(std::vector<float>& v, size_t i, float h, Eval eval) {
  const float orig = v[i];
  CentralDiff d;
  double L[2];
  for (int side = 0; side < 2; ++side) {
    v[i] = orig + (side ? -h : h);
    const auto [loss, same] = eval();
    L[side] = loss;
    d.same = d.same && same;
  }
  v[i] = orig;
  d.plus = L[0], d.minus = L[1];
  d.step = double(orig + h) - double(orig - h);
  return d;
}

}  // namespace moetest
