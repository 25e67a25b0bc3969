// Load balancing of the MoE router (moe.hpp, "Auxiliary losses"): the
// Switch/GShard balance loss and the ST-MoE z-loss (values on hand-made
// routings, finite-difference gradients), and DeepSeek-V3's selection bias
// (its update rule, that it balances a skewed router, that it never touches
// the combine weights).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "finemoe/moe.hpp"
#include "moe/router.hpp"
#include "moe_ref.hpp"

using namespace finemoe;
using namespace moetest;

namespace {

// Double-precision reference of the two statistics (moe.hpp) and of the
// selection the balance loss counts (token choice: top-k of p + bias before
// capacity drops; expert choice: top-c per expert and group).
struct AuxRef {
  double balance = 0, z = 0;
  std::vector<uint8_t> chosen;  // [T·EG] selection before drops
};

AuxRef ref_aux(const MoEShape& s, int64_t T, const float* x, const float* wr, const float* bias = nullptr) {
  const int64_t d = s.d_model, EG = s.n_experts, S = s.group_size;
  std::vector<double> P(static_cast<size_t>(T * EG)), lse(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> l(static_cast<size_t>(EG));
    double m = -1e300;
    for (int64_t e = 0; e < EG; ++e) {
      for (int64_t i = 0; i < d; ++i) l[size_t(e)] += double(x[t * d + i]) * double(wr[i * EG + e]);
      m = std::max(m, l[size_t(e)]);
    }
    double z = 0;
    for (int64_t e = 0; e < EG; ++e) z += std::exp(l[size_t(e)] - m);
    lse[size_t(t)] = m + std::log(z);
    for (int64_t e = 0; e < EG; ++e) P[size_t(t * EG + e)] = std::exp(l[size_t(e)] - lse[size_t(t)]);
  }
  AuxRef r;
  r.chosen.assign(size_t(T * EG), 0);
  if (s.routing == Routing::token_choice) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int64_t> idx(static_cast<size_t>(EG));
      for (int64_t e = 0; e < EG; ++e) idx[size_t(e)] = e;
      auto score = [&](int64_t e) { return P[size_t(t * EG + e)] + (bias ? double(bias[e]) : 0.0); };
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score(a) > score(b); });
      for (int64_t j = 0; j < s.top_k; ++j) r.chosen[size_t(t * EG + idx[size_t(j)])] = 1;
    }
  } else {
    for (int64_t g0 = 0; g0 < T; g0 += S)
      for (int64_t e = 0; e < EG; ++e) {
        std::vector<int64_t> idx;
        for (int64_t t = g0; t < std::min(T, g0 + S); ++t) idx.push_back(t);
        std::stable_sort(idx.begin(), idx.end(),
                         [&](int64_t a, int64_t b) { return P[size_t(a * EG + e)] > P[size_t(b * EG + e)]; });
        for (int64_t j = 0; j < s.capacity; ++j) r.chosen[size_t(idx[size_t(j)] * EG + e)] = 1;
      }
  }
  for (int64_t g0 = 0; g0 < T; g0 += S) {
    const int64_t g1 = std::min(T, g0 + S), Sg = g1 - g0;
    std::vector<double> n(static_cast<size_t>(EG)), Pm(static_cast<size_t>(EG));
    double slots = 0;
    for (int64_t t = g0; t < g1; ++t)
      for (int64_t e = 0; e < EG; ++e) {
        n[size_t(e)] += r.chosen[size_t(t * EG + e)];
        slots += r.chosen[size_t(t * EG + e)];
        Pm[size_t(e)] += P[size_t(t * EG + e)] / double(Sg);
      }
    double Bg = 0;
    for (int64_t e = 0; e < EG; ++e) Bg += double(EG) * (n[size_t(e)] / slots) * Pm[size_t(e)];
    r.balance += double(Sg) / double(T) * Bg;
  }
  for (int64_t t = 0; t < T; ++t) r.z += lse[size_t(t)] * lse[size_t(t)] / double(T);
  return r;
}

// One forward of a fresh layer; returns its statistics.
RoutingStats forward_stats(const MoEShape& s, const Problem& p, const float* bias = nullptr, double* aux = nullptr) {
  auto disp = make_local_dispatcher();
  MoELayer layer(s, *disp);
  std::vector<float> out(p.x.size());
  layer.forward(p.x.data(), out.data(), p.T, MoEWeights{p.wr.data(), p.w1.data(), p.w2.data(), bias});
  if (aux) *aux = layer.aux_loss();
  return layer.stats();
}

// A d = E·G problem whose tokens are one-hot rows: token t is e_{hot[t]}, so
// its router logits are row hot[t] of `wr` ([EG, EG]).
Problem one_hot_problem(const MoEShape& s, const std::vector<int64_t>& hot, const std::vector<float>& wr) {
  Problem p = make_problem(s, int64_t(hot.size()), 5);
  const int64_t d = s.d_model;
  std::fill(p.x.begin(), p.x.end(), 0.0f);
  for (size_t t = 0; t < hot.size(); ++t) p.x[t * size_t(d) + size_t(hot[t])] = 1.0f;
  p.wr = wr;
  return p;
}

// Router weights giving token e_i the logit `a` on experts i, i+1, ..,
// i+width-1 (mod EG) and 0 elsewhere.
std::vector<float> band_router(int64_t EG, int64_t width, float a) {
  std::vector<float> wr(size_t(EG * EG), 0.0f);
  for (int64_t i = 0; i < EG; ++i)
    for (int64_t w = 0; w < width; ++w) wr[size_t(i * EG + (i + w) % EG)] = a;
  return wr;
}

}  // namespace

// ---- values -----------------------------------------------------------------
// Tolerances: the statistics are double sums of fp32 probabilities (relative
// error ~1e-7 each), so a value that is exactly 1 in real arithmetic comes out
// within a few 1e-7 of it; 1e-6 leaves a margin and still separates 1 from
// any real imbalance (the skewed cases below are > 1.9).

TEST(MoEAux, BalanceLossIsExactlyTheCoefficientWhenPerfectlyBalanced) {
  // top-1 over E·G = 4 experts: token e_i prefers expert i; tokens cycle over
  // the four, so every expert gets exactly 1/4 of each group's slots.
  {
    MoEShape s = make_shape(4, 4, 1, Routing::token_choice, /*group=*/8, /*cf=*/4.0, /*top_k=*/1);
    s.balance_loss = 0.01;
    Problem p = one_hot_problem(s, {0, 1, 2, 3, 3, 2, 1, 0, 1, 3, 0, 2, 2, 0, 3, 1}, band_router(4, 1, 3.0f));
    double aux = 0;
    const RoutingStats st = forward_stats(s, p, nullptr, &aux);
    EXPECT_EQ(st.selected_per_expert, (std::vector<int64_t>{4, 4, 4, 4}));
    EXPECT_NEAR(st.balance_loss, 1.0, 1e-6);
    EXPECT_NEAR(aux, 0.01, 1e-8) << "balance loss = 1 x coefficient";
  }
  // top-2 (E = 2, G = 2): token e_i prefers experts i and i+1. Every expert
  // gets 2 of each 4 tokens' 8 slots: balanced, so 1 again. Without the
  // division by k (Switch's top-1 fraction) it would be 2.
  {
    MoEShape s = make_shape(4, 2, 2, Routing::token_choice, /*group=*/8, /*cf=*/4.0, /*top_k=*/2);
    s.balance_loss = 0.01;
    Problem p = one_hot_problem(s, {0, 1, 2, 3, 2, 0, 3, 1}, band_router(4, 2, 3.0f));
    double aux = 0;
    const RoutingStats st = forward_stats(s, p, nullptr, &aux);
    EXPECT_EQ(st.selected_per_expert, (std::vector<int64_t>{4, 4, 4, 4}));
    EXPECT_NEAR(st.balance_loss, 1.0, 1e-6);
    EXPECT_NEAR(aux, 0.01, 1e-8);
  }
}

TEST(MoEAux, BalanceLossOfASkewedRoutingByHand) {
  const double e3 = std::exp(3.0);
  // top-1: every token is e_0, so all pick expert 0: f = (1, 0, 0, 0),
  // P_0 = e^3/(e^3 + 3): B = 4·e^3/(e^3 + 3).
  {
    MoEShape s = make_shape(4, 4, 1, Routing::token_choice, 8, 4.0, 1);
    s.balance_loss = 0.01;
    Problem p = one_hot_problem(s, std::vector<int64_t>(8, 0), band_router(4, 1, 3.0f));
    double aux = 0;
    const RoutingStats st = forward_stats(s, p, nullptr, &aux);
    const double want = 4.0 * e3 / (e3 + 3.0);
    EXPECT_NEAR(st.balance_loss, want, 1e-6 * want);
    EXPECT_GT(st.balance_loss, 3.4);
    EXPECT_NEAR(aux, 0.01 * want, 1e-8 * want);
    EXPECT_EQ(st.unserved_fraction, 0.0);
  }
  // top-2: all pick experts 0 and 1: f = (1/2, 1/2, 0, 0),
  // P_0 = P_1 = e^3/(2e^3 + 2): B = 4·e^3/(2e^3 + 2) (without the /k: twice that).
  {
    MoEShape s = make_shape(4, 2, 2, Routing::token_choice, 8, 4.0, 2);
    Problem p = one_hot_problem(s, std::vector<int64_t>(8, 0), band_router(4, 2, 3.0f));
    const RoutingStats st = forward_stats(s, p);
    const double want = 4.0 * e3 / (2.0 * e3 + 2.0);
    EXPECT_NEAR(st.balance_loss, want, 1e-6 * want);
    EXPECT_GT(st.balance_loss, 1.9);
  }
  // f counts the router's choices before capacity drops (Switch/GShard): at
  // capacity factor 1 only 2 of the 8 tokens are served, B is unchanged.
  {
    MoEShape s = make_shape(4, 4, 1, Routing::token_choice, 8, 1.0, 1);
    Problem p = one_hot_problem(s, std::vector<int64_t>(8, 0), band_router(4, 1, 3.0f));
    const RoutingStats st = forward_stats(s, p);
    EXPECT_EQ(st.tokens_per_expert, (std::vector<int64_t>{2, 0, 0, 0}));
    EXPECT_EQ(st.selected_per_expert, (std::vector<int64_t>{8, 0, 0, 0}));
    EXPECT_NEAR(st.balance_loss, 4.0 * e3 / (e3 + 3.0), 1e-5);
  }
  // Per routing group: group 0 all on expert 0, group 1 all on expert 1.
  // Pooled over both groups f would be (1/2, 1/2, 0, 0) and B ~1.74; per group
  // each group is fully skewed: B = 4·e^3/(e^3 + 3) as above.
  {
    MoEShape s = make_shape(4, 4, 1, Routing::token_choice, 8, 4.0, 1);
    std::vector<int64_t> hot(16, 0);
    std::fill(hot.begin() + 8, hot.end(), 1);
    Problem p = one_hot_problem(s, hot, band_router(4, 1, 3.0f));
    const RoutingStats st = forward_stats(s, p);
    EXPECT_NEAR(st.balance_loss, 4.0 * e3 / (e3 + 3.0), 1e-5);
  }
}

TEST(MoEAux, ZLossByHand) {
  // Four tokens e_0..e_3 whose logits are the rows below; Z = mean of the
  // squared logsumexps, computed here in double from the same numbers.
  const std::vector<float> wr = {1.0f, 2.0f, 3.0f, 4.0f,    //
                                 0.0f, 0.0f, 0.0f, 0.0f,    //
                                 -1.0f, 0.5f, 2.0f, -3.0f,  //
                                 10.0f, 0.0f, 0.0f, 0.0f};
  double want = 0;
  for (int r = 0; r < 4; ++r) {
    double sum = 0;
    for (int j = 0; j < 4; ++j) sum += std::exp(double(wr[size_t(r * 4 + j)]));
    want += std::log(sum) * std::log(sum) / 4.0;
  }
  // e.g. row 1: log 4 = 1.386; row 3: 10 + log(1 + 3e^-10) = 10.0001
  EXPECT_NEAR(want, (std::pow(4.0 + std::log(1 + std::exp(-1.0) + std::exp(-2.0) + std::exp(-3.0)), 2) +
                     std::pow(std::log(4.0), 2) +
                     std::pow(std::log(std::exp(-1.0) + std::exp(0.5) + std::exp(2.0) + std::exp(-3.0)), 2) +
                     std::pow(10.0 + std::log(1 + 3 * std::exp(-10.0)), 2)) /
                        4.0,
              1e-12);
  for (Routing routing : {Routing::token_choice, Routing::expert_choice}) {
    MoEShape s = make_shape(4, 4, 1, routing, /*group=*/4, 4.0, 1);
    s.z_loss = 1e-3;
    Problem p = one_hot_problem(s, {0, 1, 2, 3}, wr);
    double aux = 0;
    const RoutingStats st = forward_stats(s, p, nullptr, &aux);
    // fp32 logsumexp: relative error ~1e-7 per token, squared: 1e-6 of Z.
    EXPECT_NEAR(st.z_loss, want, 1e-6 * want);
    EXPECT_NEAR(aux, 1e-3 * want, 1e-9 * want);
  }
}

// The statistics of the layer equal the double-precision reference on random
// problems, both routings, with and without a selection bias.
TEST(MoEAux, StatisticsMatchTheReference) {
  for (Routing routing : {Routing::token_choice, Routing::expert_choice})
    for (int64_t G : {1, 4}) {
      MoEShape s = make_shape(8, 4, G, routing, 16, 1.0);
      Problem p = make_problem(s, 48, 70 + uint64_t(G), 2.0);
      std::vector<float> bias(size_t(s.n_experts));
      for (size_t e = 0; e < bias.size(); ++e) bias[e] = 0.05f * float(int(e % 5) - 2);
      const float* b = routing == Routing::token_choice ? bias.data() : nullptr;
      const AuxRef ref = ref_aux(s, p.T, p.x.data(), p.wr.data(), b);
      const RoutingStats st = forward_stats(s, p, b);
      EXPECT_NEAR(st.balance_loss, ref.balance, 1e-6 * ref.balance) << "G " << G;
      EXPECT_NEAR(st.z_loss, ref.z, 1e-6 * ref.z) << "G " << G;
      std::vector<int64_t> chosen(size_t(s.n_experts), 0);
      for (int64_t t = 0; t < p.T; ++t)
        for (int64_t e = 0; e < s.n_experts; ++e) chosen[size_t(e)] += ref.chosen[size_t(t * s.n_experts + e)];
      EXPECT_EQ(st.selected_per_expert, chosen) << "G " << G;
    }
}

// ---- gradients ----------------------------------------------------------------
// Finite differences of the layer's own aux_loss() (dout = 0, so the aux
// losses are the whole objective) against backward()'s router and input
// gradients. The balance loss is piecewise smooth (f changes when the
// selection does), so a probe whose ±h changes the reference's selection is
// skipped and counted, as in test_gradcheck.cpp; the z-loss is smooth.
//
// Tolerance: |fd − analytic| ≤ 5e-5 + 2e-3·|analytic|. The objective is a
// double sum over fp32 probabilities, whose rounding (~6e-8 relative, about
// 1e-7 of a statistic near 1) divided by the 2h = 6e-3 step gives absolute
// FD noise of ~2e-5 (measured: up to 4e-6 on gradients of 5e-4); the central
// difference's truncation error is h²/6·|f'''| ~ 1e-6 relative with O(1)
// logits, and the fp32 backward's own rounding ~1e-6 relative. Measured
// worst relative errors on gradients above 1e-3 are printed (~1e-3 at most);
// a wrong factor (2, 1/k, a missing softmax term) is an error of order 1.
namespace {

struct AuxCase {
  Routing routing;
  int64_t G;
  double balance, z;
  bool bias;
};

void PrintTo(const AuxCase& c, std::ostream* os) {
  *os << (c.routing == Routing::expert_choice ? "expert_choice" : "token_choice") << " G=" << c.G
      << " balance=" << c.balance << " z=" << c.z << (c.bias ? " with bias" : "");
}

std::string aux_case_name(const testing::TestParamInfo<AuxCase>& info) {
  const AuxCase& c = info.param;
  return std::string(c.routing == Routing::expert_choice ? "ExpertChoice" : "TokenChoice") + "_G" +
         std::to_string(c.G) + (c.balance > 0 ? "_Balance" : "") + (c.z > 0 ? "_Z" : "") + (c.bias ? "_Bias" : "");
}

class MoEAuxGradCheck : public testing::TestWithParam<AuxCase> {};

}  // namespace

TEST_P(MoEAuxGradCheck, MatchesFiniteDifferences) {
  const AuxCase c = GetParam();
  const int64_t d = 8, E = 4, T = 32;
  MoEShape s = make_shape(d, E, c.G, c.routing, /*group=*/16, /*cf=*/1.0);
  s.balance_loss = c.balance;
  s.z_loss = c.z;
  Problem p = make_problem(s, T, 4321 + uint64_t(c.G) + 100 * (c.routing == Routing::expert_choice), 1.5);
  std::vector<float> bias(size_t(s.n_experts), 0.0f);
  for (size_t e = 0; e < bias.size(); ++e) bias[e] = 0.04f * float(int(e * 3 % 7) - 3);
  const float* b = c.bias ? bias.data() : nullptr;

  auto disp = make_local_dispatcher();
  MoELayer layer(s, *disp);
  std::vector<float> out(size_t(T * d)), dx(size_t(T * d), 0.0f), zero_dout(size_t(T * d), 0.0f);
  std::vector<float> gwr(p.wr.size(), 0.0f), gw1(p.w1.size(), 0.0f), gw2(p.w2.size(), 0.0f);
  auto weights = [&] { return MoEWeights{p.wr.data(), p.w1.data(), p.w2.data(), b}; };
  layer.forward(p.x.data(), out.data(), T, weights());
  const double aux0 = layer.aux_loss();
  layer.backward(zero_dout.data(), dx.data(), weights(), MoEGrads{gwr.data(), gw1.data(), gw2.data()});
  EXPECT_GT(aux0, 0.0);
  for (float g : gw1) ASSERT_EQ(g, 0.0f) << "aux losses do not reach the experts";

  // aux_scale scales the aux gradient linearly (the trainer passes local/global tokens).
  {
    std::vector<float> dx2(dx.size(), 0.0f), gwr2(gwr.size(), 0.0f);
    layer.forward(p.x.data(), out.data(), T, weights());
    layer.backward(zero_dout.data(), dx2.data(), weights(), MoEGrads{gwr2.data(), gw1.data(), gw2.data()}, 0.25);
    for (size_t i = 0; i < gwr.size(); ++i) EXPECT_NEAR(gwr2[i], 0.25f * gwr[i], 1e-6f * (1.0f + std::fabs(gwr[i])));
  }

  const AuxRef base = ref_aux(s, T, p.x.data(), p.wr.data(), b);
  const float h = 3e-3f;
  struct Tensor {
    const char* name;
    std::vector<float>* v;
    const std::vector<float>* grad;
  } tensors[] = {{"router", &p.wr, &gwr}, {"x", &p.x, &dx}};
  Rng pick(7 + uint64_t(c.G));
  for (const Tensor& tn : tensors) {
    const int probes = 32;
    int valid = 0, skipped = 0;
    double worst = 0, largest = 0;
    for (int n = 0; n < probes; ++n) {
      const size_t i = size_t(pick.next_u64() % tn.v->size());
      const CentralDiff d = central_diff(*tn.v, i, h, [&] {
        const bool same = ref_aux(s, T, p.x.data(), p.wr.data(), b).chosen == base.chosen;
        layer.forward(p.x.data(), out.data(), T, weights());
        return std::make_pair(double(layer.aux_loss()), same);
      });
      if (!d.same && c.balance > 0) {
        ++skipped;
        continue;
      }
      ++valid;
      const double fd = (d.plus - d.minus) / d.step;
      const double an = (*tn.grad)[i];
      const double err = std::abs(fd - an);
      if (std::abs(an) > 1e-3) worst = std::max(worst, err / std::abs(an));
      largest = std::max(largest, std::abs(an));
      EXPECT_LE(err, 5e-5 + 2e-3 * std::abs(an))
          << tn.name << "[" << i << "]: finite difference " << fd << " vs backward " << an;
    }
    std::printf("  %-6s %d probes valid, %d skipped (selection changed), worst relative error (|gradient| > 1e-3) "
                "%.2e, largest |gradient| %.2e\n",
                tn.name, valid, skipped, worst, largest);
    EXPECT_GE(valid, probes * 3 / 4) << tn.name << ": too many probes crossed a routing boundary";
    EXPECT_GT(largest, 2e-3) << tn.name << ": the check must see real gradients, far above the FD noise";
  }
}

INSTANTIATE_TEST_SUITE_P(
    AuxLosses, MoEAuxGradCheck,
    testing::Values(AuxCase{Routing::token_choice, 1, 1.0, 0.0, false},
                    AuxCase{Routing::token_choice, 4, 1.0, 0.0, false},
                    AuxCase{Routing::token_choice, 2, 1.0, 0.0, true},
                    AuxCase{Routing::token_choice, 2, 0.0, 0.1, false},
                    AuxCase{Routing::token_choice, 4, 0.5, 0.05, true},
                    AuxCase{Routing::expert_choice, 2, 0.0, 0.1, false}),
    aux_case_name);

// ---- selection bias ------------------------------------------------------------

TEST(MoEAux, SelectionBiasUpdateRule) {
  // mean load 4: over-loaded experts go down, under-loaded up, exactly-mean stay.
  std::vector<float> bias = {0.5f, 0.0f, -0.25f, 0.0f};
  const std::vector<int64_t> load = {5, 3, 4, 4};
  update_selection_bias(bias.data(), load.data(), 4, 0.125);
  EXPECT_EQ(bias, (std::vector<float>{0.375f, 0.125f, -0.25f, 0.0f}));
  // The mean is compared exactly (integers), also when it is not an integer:
  // loads (2, 1) have mean 1.5.
  std::vector<float> b2 = {0.0f, 0.0f};
  const std::vector<int64_t> l2 = {2, 1};
  update_selection_bias(b2.data(), l2.data(), 2, 0.5);
  EXPECT_EQ(b2, (std::vector<float>{-0.5f, 0.5f}));
  // rate 0: untouched.
  update_selection_bias(b2.data(), l2.data(), 2, 0.0);
  EXPECT_EQ(b2, (std::vector<float>{-0.5f, 0.5f}));
}

// The bias changes which experts are chosen, never the weights they combine
// with: every assignment's weight is bitwise the unbiased softmax probability,
// and the probabilities themselves are those of the unbiased router.
// The first n values of a backend buffer, through the explicit host copy.
template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& b, int64_t n) {
  std::vector<T> h(static_cast<size_t>(n));
  if (n) b.backend().copy_to_host(h.data(), b.data(), n * int64_t(sizeof(T)));
  return h;
}

TEST(MoEAux, SelectionBiasNeverChangesCombineWeights) {
  MoEShape s = make_shape(8, 4, 2, Routing::token_choice, 16, 2.0);
  Problem p = make_problem(s, 64, 31, 2.0);
  std::vector<float> bias(size_t(s.n_experts));
  for (size_t e = 0; e < bias.size(); ++e) bias[e] = 0.2f * float(int(e % 3) - 1);
  moe::Routes plain(cpu_backend()), biased(cpu_backend());
  moe::route_forward(cpu_backend(), s, p.x.data(), p.wr.data(), nullptr, p.T, plain);
  moe::route_forward(cpu_backend(), s, p.x.data(), p.wr.data(), bias.data(), p.T, biased);
  const int64_t EG = s.n_experts, A = biased.assignments();
  const std::vector<float> probs = to_host(biased.probs, p.T * EG), plain_probs = to_host(plain.probs, p.T * EG);
  const std::vector<int64_t> tok = to_host(biased.tok, A), expert = to_host(biased.expert, A);
  const std::vector<float> weight = to_host(biased.weight, A);
  for (int64_t i = 0; i < p.T * EG; ++i) ASSERT_EQ(probs[size_t(i)], plain_probs[size_t(i)]);
  int64_t differ = 0;
  for (int64_t i = 0; i < A; ++i) {
    const int64_t t = tok[size_t(i)], e = expert[size_t(i)];
    ASSERT_EQ(weight[size_t(i)], probs[size_t(t * EG + e)]) << "assignment " << i;
  }
  for (int64_t e = 0; e < EG; ++e) differ += biased.selected[size_t(e)] != plain.selected[size_t(e)];
  EXPECT_GT(differ, 0) << "the bias must change the selection for this check to mean anything";

  // The whole layer: its output equals the reference that selects by p + bias
  // and combines with p (and not the unbiased selection).
  auto disp = make_local_dispatcher();
  MoELayer layer(s, *disp);
  std::vector<float> out(p.x.size());
  layer.forward(p.x.data(), out.data(), p.T, MoEWeights{p.wr.data(), p.w1.data(), p.w2.data(), bias.data()});
  const RefResult ref = ref_forward(s, p.T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data(), bias.data());
  const RefResult unbiased = ref_forward(s, p.T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data());
  double worst = 0, moved = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    worst = std::max(worst, std::abs(double(out[i]) - ref.out[i]));
    moved = std::max(moved, std::abs(ref.out[i] - unbiased.out[i]));
  }
  EXPECT_LT(worst, 2e-5);
  EXPECT_GT(moved, 1e-2);
}

// A router skewed towards two experts, fixed (no training): with the bias
// updated after every "step" (fresh tokens each time), the max/mean load
// ratio falls from its initial value to near 1, while with rate 0 it stays.
TEST(MoEAux, SelectionBiasEvensOutASkewedRouter) {
  const int64_t d = 16, E = 8, T = 2048;
  MoEShape s = make_shape(d, E, 1, Routing::token_choice, 256, 2.0, 1);
  const int64_t EG = s.n_experts;
  Problem p = make_problem(s, T, 77, 1.0);
  // Feature 0 of every token is 1 and gives experts 0 and 1 a head start.
  p.wr[0] += 2.0f;
  p.wr[1] += 1.5f;
  auto max_over_mean = [&](const std::vector<int64_t>& load) {
    int64_t mx = 0, sum = 0;
    for (int64_t n : load) mx = std::max(mx, n), sum += n;
    return double(mx) * double(EG) / double(sum);
  };
  auto run = [&](double rate, std::vector<float>& bias, int steps) {
    auto disp = make_local_dispatcher();
    MoELayer layer(s, *disp);
    std::vector<float> out(size_t(T * d));
    Rng rng(1234);
    std::vector<double> ratios;
    for (int step = 0; step < steps; ++step) {
      for (int64_t t = 0; t < T; ++t) {
        p.x[size_t(t * d)] = 1.0f;
        for (int64_t i = 1; i < d; ++i) p.x[size_t(t * d + i)] = float(rng.normal());
      }
      layer.forward(p.x.data(), out.data(), T, MoEWeights{p.wr.data(), p.w1.data(), p.w2.data(), bias.data()});
      ratios.push_back(max_over_mean(layer.selection_counts()));
      update_selection_bias(bias.data(), layer.selection_counts().data(), EG, rate);
    }
    return ratios;
  };
  const int steps = 300;
  std::vector<float> bias(size_t(EG), 0.0f), none(size_t(EG), 0.0f);
  const std::vector<double> on = run(0.005, bias, steps), off = run(0.0, none, steps);
  auto mean_last = [&](const std::vector<double>& r) {
    double m = 0;
    for (int i = steps - 50; i < steps; ++i) m += r[size_t(i)] / 50.0;
    return m;
  };
  std::printf("  max/mean load: start %.3f; after %d steps with bias %.3f, without %.3f; bias of expert 0: %.3f\n",
              on[0], steps, mean_last(on), mean_last(off), bias[0]);
  EXPECT_GT(on[0], 2.5) << "the router must start skewed";
  EXPECT_NEAR(mean_last(off), on[0], 0.3) << "without the bias the skew stays";
  EXPECT_LT(mean_last(on), 1.4) << "the bias must even the loads out";
  EXPECT_LT(mean_last(on), 0.5 * on[0]);
  EXPECT_LT(bias[0], 0.0f);
  EXPECT_EQ(none, std::vector<float>(size_t(EG), 0.0f));
}

TEST(MoEAux, ExpertChoiceRefusesASelectionBias) {
  MoEShape s = make_shape(8, 4, 2, Routing::expert_choice, 16);
  Problem p = make_problem(s, 32, 3);
  std::vector<float> bias(size_t(s.n_experts), 0.0f), out(p.x.size());
  auto disp = make_local_dispatcher();
  MoELayer layer(s, *disp);
  try {
    layer.forward(p.x.data(), out.data(), p.T, MoEWeights{p.wr.data(), p.w1.data(), p.w2.data(), bias.data()});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("moe.bias_update_rate"), std::string::npos) << e.what();
  }
}
