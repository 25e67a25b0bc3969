// The CPU backend's MoE kernels (src/backend/cpu/moe_kernels.cpp) against the
// naive reference (naive_moe.cpp), kernel by kernel, on random inputs.
//
// Index outputs (selections, counts, CSR views) and copies must be EQUAL: the
// two backends share the selection order of kernels.hpp (value descending,
// index ascending, NaN as -1, -0 == +0), and the inputs below are quantised so
// that ties, NaN and signed zeros actually occur. Float outputs get a bound
// from the summation: the CPU kernels accumulate n terms in float (error at
// most n·u·Σ|term|, u = 2^-24) where the reference sums in double, so each
// check allows 2·n·u·Σ|term| (and a little more for the softmax's exp/log).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "naive_backend.hpp"

namespace finemoe {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24, fp32 unit roundoff

struct Rng {
  std::mt19937_64 g{20240514};
  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(g); }
  int64_t index(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(g); }
  std::vector<float> floats(int64_t n, double a, double b) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = float(uniform(a, b));
    return v;
  }
};

// Row-wise probabilities in [0, 1) quantised to 1/8 so that most rows hold
// ties, plus a few NaN and -0 entries (a diverged router must still select
// deterministically). Not normalised: the selections do not care.
std::vector<float> tied_probs(Rng& rng, int64_t T, int64_t EG) {
  std::vector<float> p(size_t(T * EG));
  for (float& x : p) {
    const int64_t r = rng.index(40);
    x = r == 0 ? std::numeric_limits<float>::quiet_NaN() : r == 1 ? -0.0f : float(rng.index(8)) / 8.0f;
  }
  return p;
}

Backend& cpu() { return cpu_backend(); }

TEST(NaiveMoEKernels, Softmax) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 37, EG = 13;
  const std::vector<float> logits = rng.floats(T * EG, -6.0, 6.0);
  std::vector<float> p1(size_t(T * EG), -1.0f), p2 = p1, l1(size_t(T), -1.0f), l2 = l1;
  cpu().moe_softmax(logits.data(), p1.data(), l1.data(), T, EG);
  naive.moe_softmax(logits.data(), p2.data(), l2.data(), T, EG);
  // p = exp(l − m)/s: the float exp and division each within a few u, the
  // float sum within EG·u relative; p ≤ 1, so an absolute bound.
  for (size_t i = 0; i < p1.size(); ++i) EXPECT_NEAR(p1[i], p2[i], (EG + 4) * kU * 2) << i;
  // lse = m + log s: |log| error ≈ relative error of s; |lse| ≤ 6 + log EG.
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(l1[size_t(t)], l2[size_t(t)], (EG + 4) * kU * 16) << t;
}

TEST(NaiveMoEKernels, SelectExpertChoiceIsIdentical) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t S = 16, T = 4 * S, EG = 7;
  const std::vector<float> P = tied_probs(rng, T, EG);
  for (int64_t c : {int64_t(1), int64_t(5), S}) {
    const int64_t A = EG * (T / S) * c;
    std::vector<int64_t> tok1(size_t(A), -7), tok2 = tok1, ex1 = tok1, ex2 = tok1;
    std::vector<float> w1(size_t(A), -7.0f), w2 = w1;
    cpu().moe_select_expert_choice(P.data(), T, EG, S, c, tok1.data(), ex1.data(), w1.data());
    naive.moe_select_expert_choice(P.data(), T, EG, S, c, tok2.data(), ex2.data(), w2.data());
    EXPECT_EQ(tok1, tok2) << "c = " << c;
    EXPECT_EQ(ex1, ex2) << "c = " << c;
    for (int64_t i = 0; i < A; ++i)  // copies of probs, NaN included: compare the bits' meaning
      EXPECT_TRUE(w1[size_t(i)] == w2[size_t(i)] || (std::isnan(w1[size_t(i)]) && std::isnan(w2[size_t(i)]))) << i;
  }
}

TEST(NaiveMoEKernels, TopKIsIdentical) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 50, EG = 9;
  const std::vector<float> P = tied_probs(rng, T, EG);
  std::vector<float> bias(static_cast<size_t>(EG));
  for (float& b : bias) b = float(rng.index(3) - 1) / 8.0f;  // shifts by 1/8 keep the ties exact
  for (int64_t k : {int64_t(1), int64_t(3), EG})
    for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
      std::vector<int64_t> c1(size_t(T * k), -7), c2 = c1;
      cpu().moe_topk(P.data(), b, T, EG, k, c1.data());
      naive.moe_topk(P.data(), b, T, EG, k, c2.data());
      EXPECT_EQ(c1, c2) << "k = " << k << (b ? " with bias" : "");
    }
}

// Capacity pass and expert-major list from the same top-k choices, with a
// short last group and capacities that drop.
TEST(NaiveMoEKernels, CapacityAndExpertMajorAreIdentical) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 45, EG = 6, k = 2, S = 16, ng = (T + S - 1) / S;
  const std::vector<float> P = rng.floats(T * EG, 0.0, 1.0);
  std::vector<int64_t> choice(size_t(T * k));
  naive.moe_topk(P.data(), nullptr, T, EG, k, choice.data());
  for (int64_t cap : {int64_t(2), int64_t(4), int64_t(1000)}) {
    std::vector<int64_t> ch1 = choice, ch2 = choice;
    std::vector<int64_t> n1(size_t(EG), -7), n2 = n1, s1 = n1, s2 = n1, g1(size_t(ng * EG), -7), g2 = g1;
    const int64_t d1 = cpu().moe_capacity(ch1.data(), T, EG, k, S, cap, cap - 1, n1.data(), s1.data(), g1.data());
    const int64_t d2 = naive.moe_capacity(ch2.data(), T, EG, k, S, cap, cap - 1, n2.data(), s2.data(), g2.data());
    EXPECT_EQ(d1, d2) << "cap " << cap;
    EXPECT_EQ(ch1, ch2) << "cap " << cap;
    EXPECT_EQ(n1, n2) << "cap " << cap;
    EXPECT_EQ(s1, s2) << "cap " << cap;
    EXPECT_EQ(g1, g2) << "cap " << cap;
    if (cap == 2) {
      EXPECT_GT(d1, 0) << "this capacity must drop for the check to mean anything";
    }

    const int64_t A = T * k - d1;
    std::vector<int64_t> t1(size_t(A), -7), t2 = t1, e1 = t1, e2 = t1;
    std::vector<float> w1(size_t(A), -7.0f), w2 = w1;
    cpu().moe_expert_major(ch1.data(), n1.data(), P.data(), T, EG, k, t1.data(), e1.data(), w1.data());
    naive.moe_expert_major(ch1.data(), n1.data(), P.data(), T, EG, k, t2.data(), e2.data(), w2.data());
    EXPECT_EQ(t1, t2);
    EXPECT_EQ(e1, e2);
    EXPECT_EQ(w1, w2);
  }
}

// Random expert-major lists (some tokens unserved, some with several experts).
TEST(NaiveMoEKernels, TokenViewAndUnservedAreIdentical) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 30, EG = 5;
  std::vector<int64_t> tok;
  for (int64_t e = 0; e < EG; ++e)
    for (int64_t t = 0; t < T; ++t)
      if (rng.index(3) == 0) tok.push_back(t);
  const int64_t A = int64_t(tok.size());
  std::vector<int64_t> o1(size_t(T + 1), -7), o2 = o1, b1(size_t(A), -7), b2 = b1;
  cpu().moe_token_view(tok.data(), A, T, o1.data(), b1.data());
  naive.moe_token_view(tok.data(), A, T, o2.data(), b2.data());
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(b1, b2);
  const int64_t u = cpu().moe_unserved_tokens(o1.data(), T);
  EXPECT_EQ(u, naive.moe_unserved_tokens(o1.data(), T));
  EXPECT_GT(u, 0) << "some token must be unserved for the check to mean anything";
}

TEST(NaiveMoEKernels, AuxStatistics) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 45, EG = 6, S = 16, ng = (T + S - 1) / S;
  const std::vector<float> P = rng.floats(T * EG, 0.0, 1.0), lse = rng.floats(T, -3.0, 3.0);
  std::vector<int64_t> sel(size_t(ng * EG));
  for (int64_t& n : sel) n = rng.index(5);
  std::vector<double> f1(size_t(ng * EG), -7.0), f2 = f1, g1(size_t(ng), -7.0), g2 = g1;
  double b1 = -7, b2 = -7, z1 = -7, z2 = -7;
  cpu().moe_aux_statistics(P.data(), sel.data(), lse.data(), T, EG, S, f1.data(), g1.data(), &b1, &z1);
  naive.moe_aux_statistics(P.data(), sel.data(), lse.data(), T, EG, S, f2.data(), g2.data(), &b2, &z2);
  // Both sum in double over ≤ S·EG terms of size ≤ 1 (f, p ≤ 1): 1e-12 covers
  // any summation order.
  for (size_t i = 0; i < f1.size(); ++i) EXPECT_EQ(f1[i], f2[i]) << i;  // one division each
  for (int64_t g = 0; g < ng; ++g) EXPECT_NEAR(g1[size_t(g)], g2[size_t(g)], 1e-12) << g;
  EXPECT_NEAR(b1, b2, 1e-12);
  EXPECT_NEAR(z1, z2, 1e-12);
}

TEST(NaiveMoEKernels, RouterEntropy) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t T = 21, EG = 8;
  std::vector<float> P = rng.floats(T * EG, 0.0, 0.25);
  P[3] = 0.0f;  // 0·log 0 = 0
  std::vector<double> h1(size_t(T), -7.0), h2 = h1;
  const double m1 = cpu().moe_router_entropy(P.data(), T, EG, h1.data());
  const double m2 = naive.moe_router_entropy(P.data(), T, EG, h2.data());
  // Double sums of EG terms of size < 1 (the same log of the same double).
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(h1[size_t(t)], h2[size_t(t)], 1e-12) << t;
  EXPECT_NEAR(m1, m2, 1e-12);
  EXPECT_EQ(cpu().moe_router_entropy(P.data(), 0, EG, h1.data()), 0.0);
  EXPECT_EQ(naive.moe_router_entropy(P.data(), 0, EG, h2.data()), 0.0);
}

// A random token-choice routing (top-k, no drops) of T tokens over EG experts:
// the list, its CSR view, probabilities, and per-assignment weights.
struct RandomRoutes {
  int64_t T, EG, k, A;
  std::vector<float> P, lse, weight;
  std::vector<int64_t> tok, expert, tok_off, by_tok, counts;
};

RandomRoutes make_routes(Rng& rng, int64_t T, int64_t EG, int64_t k) {
  testing::NaiveBackend naive;
  RandomRoutes r{T, EG, k, T * k, {}, {}, {}, {}, {}, {}, {}, {}};
  const std::vector<float> logits = rng.floats(T * EG, -2.0, 2.0);
  r.P.resize(size_t(T * EG));
  r.lse.resize(size_t(T));
  naive.moe_softmax(logits.data(), r.P.data(), r.lse.data(), T, EG);
  std::vector<int64_t> choice(size_t(T * k)), sel(static_cast<size_t>(EG)), gsel(static_cast<size_t>(EG));
  naive.moe_topk(r.P.data(), nullptr, T, EG, k, choice.data());
  r.counts.resize(size_t(EG));
  naive.moe_capacity(choice.data(), T, EG, k, T, T * k, T * k, r.counts.data(), sel.data(), gsel.data());
  r.tok.resize(size_t(r.A));
  r.expert.resize(size_t(r.A));
  r.weight.resize(size_t(r.A));
  naive.moe_expert_major(choice.data(), r.counts.data(), r.P.data(), T, EG, k, r.tok.data(), r.expert.data(),
                         r.weight.data());
  r.tok_off.resize(size_t(T + 1));
  r.by_tok.resize(size_t(r.A));
  naive.moe_token_view(r.tok.data(), r.A, T, r.tok_off.data(), r.by_tok.data());
  return r;
}

TEST(NaiveMoEKernels, RouterBackward) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t S = 8;
  const RandomRoutes r = make_routes(rng, 24, 7, 3);
  const std::vector<float> dprob = rng.floats(r.A, -1.0, 1.0);
  std::vector<double> frac(size_t(r.T / S * r.EG));
  for (double& f : frac) f = rng.uniform(0.0, 0.3);
  for (bool aux : {false, true}) {
    std::vector<float> d1(size_t(r.T * r.EG), -7.0f), d2 = d1;
    const double cb = aux ? 0.7 : 0.0, cz = aux ? 0.3 : 0.0;
    cpu().moe_router_backward(r.P.data(), r.lse.data(), frac.data(), r.tok_off.data(), r.by_tok.data(),
                              r.expert.data(), r.weight.data(), dprob.data(), r.T, r.EG, S, aux, cb, cz, d1.data());
    naive.moe_router_backward(r.P.data(), r.lse.data(), frac.data(), r.tok_off.data(), r.by_tok.data(),
                              r.expert.data(), r.weight.data(), dprob.data(), r.T, r.EG, S, aux, cb, cz, d2.data());
    // dot is a float sum of k + EG terms (|dprob·w| ≤ 1, |cb·f·p| ≤ 0.21),
    // then p·(a − dot + c) and the k additions of p·dprob round values below
    // 6 (|c| = cz·|lse| ≤ 0.3·4): 2·(k + EG + 4)·u·6 bounds the difference.
    const double tol = 2.0 * double(r.k + r.EG + 4) * kU * 6.0;
    for (size_t i = 0; i < d1.size(); ++i) EXPECT_NEAR(d1[i], d2[i], tol) << (aux ? "aux " : "") << i;
  }
}

TEST(NaiveMoEKernels, GatherCombineAndScatter) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t d = 45;  // d % 8 != 0: the vector loops' tails run
  const RandomRoutes r = make_routes(rng, 19, 6, 2);
  const std::vector<float> x = rng.floats(r.T * d, -1.0, 1.0), y = rng.floats(r.A * d, -1.0, 1.0);

  std::vector<float> g1(size_t(r.A * d), -7.0f), g2 = g1;
  cpu().moe_gather_rows(x.data(), r.tok.data(), r.A, d, g1.data());
  naive.moe_gather_rows(x.data(), r.tok.data(), r.A, d, g2.data());
  EXPECT_EQ(g1, g2);

  // out = Σ of k products (|p·y| ≤ 1): 2·k·u·k.
  std::vector<float> o1(size_t(r.T * d), -7.0f), o2 = o1;
  cpu().moe_combine(y.data(), r.weight.data(), r.tok_off.data(), r.by_tok.data(), r.T, d, o1.data());
  naive.moe_combine(y.data(), r.weight.data(), r.tok_off.data(), r.by_tok.data(), r.T, d, o2.data());
  for (size_t i = 0; i < o1.size(); ++i) EXPECT_NEAR(o1[i], o2[i], 2.0 * r.k * kU * r.k) << i;

  // dprob = float sum of d products ≤ 1: 2·d·u·Σ|term| ≤ 2·d·u·d; dy is one
  // float product in both: equal.
  std::vector<float> dy1(size_t(r.A * d), -7.0f), dy2 = dy1, dp1(size_t(r.A), -7.0f), dp2 = dp1;
  cpu().moe_combine_backward(x.data(), y.data(), r.tok.data(), r.weight.data(), r.A, d, dy1.data(), dp1.data());
  naive.moe_combine_backward(x.data(), y.data(), r.tok.data(), r.weight.data(), r.A, d, dy2.data(), dp2.data());
  EXPECT_EQ(dy1, dy2);
  for (int64_t i = 0; i < r.A; ++i) EXPECT_NEAR(dp1[size_t(i)], dp2[size_t(i)], 2.0 * d * kU * d) << i;

  // dx accumulates: starts from a non-zero dx, adds k rows ≤ 1: 2·(k+1)·u·(k+1).
  const std::vector<float> dx0 = rng.floats(r.T * d, -1.0, 1.0);
  std::vector<float> s1 = dx0, s2 = dx0;
  cpu().moe_scatter_add(y.data(), r.tok_off.data(), r.by_tok.data(), r.T, d, s1.data());
  naive.moe_scatter_add(y.data(), r.tok_off.data(), r.by_tok.data(), r.T, d, s2.data());
  for (size_t i = 0; i < s1.size(); ++i) EXPECT_NEAR(s1[i], s2[i], 2.0 * (r.k + 1) * kU * (r.k + 1)) << i;
}

TEST(NaiveMoEKernels, PaddingIsIdentical) {
  Rng rng;
  testing::NaiveBackend naive;
  const int64_t K = 5, width = 11;
  const std::vector<int64_t> counts = {3, 0, 7, 1, 7};
  std::vector<int64_t> offsets(static_cast<size_t>(K));
  int64_t rows = 0, rmax = 0;
  for (int64_t k = 0; k < K; ++k) {
    offsets[size_t(k)] = rows;
    rows += counts[size_t(k)];
    rmax = std::max(rmax, counts[size_t(k)]);
  }
  const std::vector<float> packed = rng.floats(rows * width, -1.0, 1.0);
  std::vector<float> p1 = rng.floats(K * rmax * width, 5.0, 6.0), p2 = p1;  // garbage to overwrite
  cpu().moe_to_padded(packed.data(), counts.data(), offsets.data(), K, rmax, width, p1.data());
  naive.moe_to_padded(packed.data(), counts.data(), offsets.data(), K, rmax, width, p2.data());
  EXPECT_EQ(p1, p2);

  std::vector<float> z1 = rng.floats(K * rmax * width, -1.0, 1.0), z2 = z1;  // only the padding changes
  cpu().moe_zero_padding(z1.data(), counts.data(), K, rmax, width);
  naive.moe_zero_padding(z2.data(), counts.data(), K, rmax, width);
  EXPECT_EQ(z1, z2);
}

}  // namespace
}  // namespace finemoe
