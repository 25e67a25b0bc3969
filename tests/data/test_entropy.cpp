// The entropy rate: the forward filter against a brute-force sum over hidden
// paths, the generator against the filter's sequence probabilities, the
// estimate against an exact Markov computation and a plug-in count estimate,
// and stability across independent samples.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "finemoe/synthetic.hpp"

using namespace finemoe;

namespace {

// Tiny process with every mechanism on: 2 regimes, copies, order 1.
SynthParams tiny() {
  SynthParams p;
  p.vocab = 3;
  p.regimes = 2;
  p.regime_stay = 0.7;
  p.order = 1;
  p.branching = 2;
  p.zipf = 0.8;
  p.copy_prob = 0.3;
  p.copy_len = 2.0;
  p.copy_distance = 2;
  p.doc_len = 5;
  return p;
}

// P(x_t.. | r, c at t-1) by summing over every hidden path, written straight
// from the process definition (no filter).
double brute(const SyntheticCorpus& s, const std::vector<int32_t>& x, size_t t, int64_t r, int64_t c) {
  if (t == x.size()) return 1.0;
  const SynthParams& p = s.params();
  const int64_t R = p.regimes, D = std::min<int64_t>(p.copy_distance, int64_t(t));
  double total = 0;
  for (int64_t r2 = 0; r2 < R; ++r2) {
    double pr = t == 0 ? 1.0 / double(R) : (r2 == r ? s.p_stay() : (1.0 - s.p_stay()) / double(R - 1));
    for (int64_t c2 = 0; c2 <= D; ++c2) {
      double pc;
      if (t == 0) pc = c2 == 0 ? 1.0 : 0.0;
      else if (c > 0) pc = c2 == c ? s.p_continue() : c2 == 0 ? 1.0 - s.p_continue() : 0.0;
      else pc = c2 == 0 ? 1.0 - s.p_copy() : s.p_copy() / double(D);
      if (pr * pc == 0) continue;
      double e = 0;
      if (c2 > 0) {
        e = x[t - size_t(c2)] == x[t] ? 1.0 : 0.0;
      } else {
        int32_t ctx[1] = {t == 0 ? int32_t(p.vocab) : x[t - 1]};
        for (auto& [v, w] : s.successor_probs(r2, ctx))
          if (v == x[t]) e += w;
      }
      if (e > 0) total += pr * pc * e * brute(s, x, t + 1, r2, c2);
    }
  }
  return total;
}

double filter_prob(const SyntheticCorpus& s, const std::vector<int32_t>& x) {
  std::vector<double> lp(x.size());
  s.filter_log_probs(x.data(), int64_t(x.size()), lp.data());
  double l = 0;
  for (double v : lp) l += v;
  return std::exp(l);
}

}  // namespace

TEST(Entropy, FilterEqualsBruteForceOverHiddenPaths) {
  SyntheticCorpus s(tiny(), 0);
  // Every sequence of length 5 over 3 tokens: the filter's joint probability
  // equals the path sum, and the probabilities sum to one.
  double sum = 0;
  int nonzero = 0;
  std::vector<int32_t> x(5);
  for (int code = 0; code < 243; ++code) {
    for (int t = 0, c = code; t < 5; ++t, c /= 3) x[size_t(t)] = c % 3;
    double b = brute(s, x, 0, 0, 0);
    sum += b;
    if (b == 0) continue;
    ++nonzero;
    EXPECT_NEAR(filter_prob(s, x), b, 1e-12 + 1e-9 * b);
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);
  EXPECT_GT(nonzero, 20);
}

TEST(Entropy, GeneratorMatchesTheFilteredProcess) {
  // 200k documents of 5 tokens: empirical sequence frequencies against the
  // filter's exact probabilities (chi-square over all 243 sequences).
  SyntheticCorpus s(tiny(), 0);
  const int64_t N = 200000;
  std::map<std::vector<int32_t>, int64_t> count;
  std::vector<int32_t> x(5);
  for (int64_t d = 0; d < N; ++d) {
    s.generate_doc(3, d, x.data());
    ++count[x];
  }
  double chi2 = 0;
  int cells = 0;
  for (int code = 0; code < 243; ++code) {
    for (int t = 0, c = code; t < 5; ++t, c /= 3) x[size_t(t)] = c % 3;
    double p = brute(s, x, 0, 0, 0);
    int64_t obs = count.count(x) ? count[x] : 0;
    if (p == 0) {
      EXPECT_EQ(obs, 0) << "generated a sequence the process gives probability 0";
      continue;
    }
    double e = p * double(N);
    chi2 += (double(obs) - e) * (double(obs) - e) / e;
    ++cells;
  }
  // df = cells - 1; mean df, sd sqrt(2 df): 6 sd is far beyond chance.
  EXPECT_LT(chi2, (cells - 1) + 6 * std::sqrt(2.0 * (cells - 1))) << "chi2 " << chi2 << " over " << cells << " cells";
}

namespace {
// Exact per-token entropy of the document process with one regime and no
// copies: propagate the distribution of the order-k context (pads included)
// through the transition table and average H(P(.|ctx)) over positions.
double exact_markov_doc_entropy(const SyntheticCorpus& s) {
  const SynthParams& p = s.params();
  const int64_t V = p.vocab, k = p.order, B = V + 1;
  int64_t n_states = 1;
  for (int64_t j = 0; j < k; ++j) n_states *= B;
  // State code: sum ctx[j] * B^j, ctx[0] = most recent.
  std::vector<std::vector<std::pair<int32_t, double>>> P(static_cast<size_t>(n_states));
  std::vector<double> Hs(static_cast<size_t>(n_states));
  std::vector<int32_t> ctx(static_cast<size_t>(k));
  for (int64_t code = 0; code < n_states; ++code) {
    for (int64_t j = 0, c = code; j < k; ++j, c /= B) ctx[size_t(j)] = int32_t(c % B);
    P[size_t(code)] = s.successor_probs(0, ctx.data());
    double h = 0;
    for (auto& [v, w] : P[size_t(code)]) h -= w * std::log(w);
    Hs[size_t(code)] = h;
  }
  std::vector<double> mu(static_cast<size_t>(n_states), 0.0), next(static_cast<size_t>(n_states));
  mu[size_t(n_states - 1)] = 1.0;  // all pads
  double total = 0;
  for (int64_t t = 0; t < p.doc_len; ++t) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t code = 0; code < n_states; ++code) {
      double m = mu[size_t(code)];
      if (m == 0) continue;
      total += m * Hs[size_t(code)];
      const int64_t shifted = (code * B) % n_states;  // drop the oldest, make room for the newest
      for (auto& [v, w] : P[size_t(code)]) next[size_t(shifted + v)] += m * w;
    }
    mu.swap(next);
  }
  return total / double(p.doc_len);
}
}  // namespace

TEST(Entropy, AgreesWithExactMarkovEntropy) {
  for (int order : {1, 2}) {
    SynthParams p;
    p.vocab = order == 1 ? 24 : 10;
    p.regimes = 1;
    p.copy_prob = 0;
    p.order = order;
    p.branching = 5;
    p.doc_len = 256;
    SyntheticCorpus s(p, 0);
    double exact = exact_markov_doc_entropy(s);
    EntropyEstimate e = s.estimate_entropy(kSynthEntropyStream, 0, 400);
    EXPECT_LT(std::fabs(e.mean - exact), 4 * e.stderr_ + 1e-9)
        << "order " << order << ": estimate " << e.mean << " +- " << e.stderr_ << " exact " << exact;
    EXPECT_LT(e.stderr_, 0.02);
    EXPECT_GT(exact, 0.3);
  }
}

TEST(Entropy, AgreesWithPluginCountEstimate) {
  // One regime, no copies, order 1: the plug-in conditional entropy of the
  // counted bigrams converges to the exact rate (bias ~ contexts·B / 2N).
  SynthParams p;
  p.vocab = 24;
  p.regimes = 1;
  p.copy_prob = 0;
  p.order = 1;
  p.branching = 5;
  p.doc_len = 4096;
  SyntheticCorpus s(p, 0);
  const int64_t N = 2000000;
  std::vector<int32_t> x(static_cast<size_t>(N));
  s.read(0, N, x.data());
  std::vector<double> c(24 * 24, 0.0), row(24, 0.0);
  for (int64_t i = 1; i < N; ++i) {
    if (i % p.doc_len == 0) continue;  // document boundary: no transition
    c[size_t(x[size_t(i - 1)] * 24 + x[size_t(i)])] += 1;
    row[size_t(x[size_t(i - 1)])] += 1;
  }
  double h = 0, total = 0;
  for (int a = 0; a < 24; ++a)
    for (int b = 0; b < 24; ++b)
      if (c[size_t(a * 24 + b)] > 0) {
        h -= c[size_t(a * 24 + b)] * std::log(c[size_t(a * 24 + b)] / row[size_t(a)]);
        total += c[size_t(a * 24 + b)];
      }
  h /= total;
  EXPECT_NEAR(h, exact_markov_doc_entropy(s), 0.01);
}

TEST(Entropy, StableAcrossIndependentSamples) {
  SynthParams p;  // default process, shorter documents to keep the test fast
  p.doc_len = 512;
  SyntheticCorpus s(p, 0);
  EntropyEstimate a = s.estimate_entropy(kSynthEntropyStream, 0, 150);
  EntropyEstimate b = s.estimate_entropy(11, 0, 150);
  EXPECT_GT(a.stderr_, 0);
  EXPECT_LT(a.stderr_, 0.03);
  EXPECT_LT(std::fabs(a.mean - b.mean), 4 * std::hypot(a.stderr_, b.stderr_))
      << a.mean << " +- " << a.stderr_ << " vs " << b.mean << " +- " << b.stderr_;
  // The hidden state matters: the rate is above the entropy given the hidden
  // state would be, and well below the uniform ln V.
  EXPECT_LT(a.mean, std::log(double(p.vocab)) - 1.0);
}
