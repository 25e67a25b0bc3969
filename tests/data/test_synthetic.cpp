// Synthetic corpus: determinism, random access, seeds, splits, unigram sanity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/rng.hpp"
#include "finemoe/synthetic.hpp"

using namespace finemoe;

namespace {
SynthParams small_params() {
  SynthParams p;
  p.vocab = 300;
  p.doc_len = 200;  // short documents so reads cross many boundaries
  return p;
}
std::vector<int32_t> read_all(const TokenSource& s, int64_t pos, int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  s.read(pos, n, v.data());
  return v;
}
}  // namespace

TEST(Synthetic, SameSeedSameTokens) {
  SyntheticCorpus a(small_params(), kSynthTrainStream), b(small_params(), kSynthTrainStream);
  auto x = read_all(a, 12345, 5000), y = read_all(b, 12345, 5000);
  EXPECT_EQ(x, y);
  for (int32_t t : x) {
    ASSERT_GE(t, 0);
    ASSERT_LT(t, 300);
  }
}

TEST(Synthetic, DifferentSeedDiffers) {
  SynthParams p = small_params();
  SyntheticCorpus a(p, kSynthTrainStream);
  p.seed = 43;
  SyntheticCorpus b(p, kSynthTrainStream);
  auto x = read_all(a, 0, 4000), y = read_all(b, 0, 4000);
  int64_t same = 0;
  for (size_t i = 0; i < x.size(); ++i) same += x[i] == y[i];
  EXPECT_LT(same, 4000 / 4) << "seeds 42 and 43 agree on " << same << " of 4000 tokens";
}

TEST(Synthetic, ValidationStreamIsDisjointButSameProcess) {
  SyntheticCorpus tr(small_params(), kSynthTrainStream), va(small_params(), kSynthValStream);
  auto x = read_all(tr, 0, 4000), y = read_all(va, 0, 4000);
  int64_t same = 0;
  for (size_t i = 0; i < x.size(); ++i) same += x[i] == y[i];
  EXPECT_LT(same, 1000);
  // Same rules: the validation stream has the same entropy per token under the filter.
  EntropyEstimate a = tr.estimate_entropy(kSynthTrainStream, 0, 200), b = tr.estimate_entropy(kSynthValStream, 0, 200);
  EXPECT_LT(std::fabs(a.mean - b.mean), 4 * std::hypot(a.stderr_, b.stderr_));
}

TEST(Synthetic, RandomAccessEqualsSequentialRead) {
  SyntheticCorpus s(small_params(), kSynthTrainStream);
  const int64_t N = 20000;
  std::vector<int32_t> seq(static_cast<size_t>(N));
  // Sequential draw in small chunks (exercises the per-thread document cache).
  for (int64_t p = 0; p < N; p += 37) s.read(p, std::min<int64_t>(37, N - p), seq.data() + p);
  SyntheticCorpus fresh(small_params(), kSynthTrainStream);
  Rng rng(7);
  for (int k = 0; k < 200; ++k) {
    int64_t p = int64_t(rng.next_u64() % uint64_t(N - 1));
    int64_t n = 1 + int64_t(rng.next_u64() % uint64_t(std::min<int64_t>(700, N - p)));
    auto got = read_all(fresh, p, n);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), seq.begin() + p)) << "read(" << p << ", " << n << ")";
  }
  // Far positions are O(block), and reproducible.
  auto far1 = read_all(s, int64_t(1) << 40, 300), far2 = read_all(fresh, int64_t(1) << 40, 300);
  EXPECT_EQ(far1, far2);
}

TEST(Synthetic, DocumentsMatchReads) {
  SyntheticCorpus s(small_params(), kSynthTrainStream);
  std::vector<int32_t> doc(200);
  s.generate_doc(kSynthTrainStream, 5, doc.data());
  EXPECT_EQ(read_all(s, 5 * 200, 200), doc);
}

TEST(Synthetic, UnigramIsZipfianAndRateBelowUnigramEntropy) {
  Config cfg;  // defaults
  SyntheticCorpus s(SynthParams::from_config(cfg), kSynthTrainStream);
  const int64_t N = 400000, V = s.vocab_size();
  auto x = read_all(s, 0, N);
  std::vector<double> f(static_cast<size_t>(V), 0.0);
  for (int32_t t : x) f[size_t(t)] += 1.0 / double(N);
  double H1 = 0;
  for (double p : f)
    if (p > 0) H1 -= p * std::log(p);
  // Frequent ranks dominate: the top 10 ids carry far more than the last 100.
  double top = 0, tail = 0;
  for (int64_t v = 0; v < 10; ++v) top += f[size_t(v)];
  for (int64_t v = V - 100; v < V; ++v) tail += f[size_t(v)];
  EXPECT_GT(top, 5 * tail);
  double se = 0, h = s.entropy_rate(&se);
  EXPECT_GT(h, 0.5);
  EXPECT_LT(h + 0.5, H1) << "entropy rate " << h << " vs unigram entropy " << H1;
  EXPECT_LT(H1, std::log(double(V)));
  EXPECT_LT(se, 0.02);
}

TEST(Synthetic, ConfigKeysReachTheCorpus) {
  Config cfg;
  set_config_value(cfg, "data.synth_doc_len", "333");
  set_config_value(cfg, "data.synth_copy_distance", "12");
  set_config_value(cfg, "data.synth_copy_len", "4");
  set_config_value(cfg, "model.vocab_size", "1000");
  cfg.validate();
  SynthParams p = SynthParams::from_config(cfg);
  EXPECT_EQ(p.doc_len, 333);
  EXPECT_EQ(p.copy_distance, 12);
  EXPECT_DOUBLE_EQ(p.copy_len, 4.0);
  EXPECT_EQ(p.vocab, 1000);
  set_config_value(cfg, "data.synth_copy_len", "0.5");
  EXPECT_THROW(cfg.validate(), ConfigError);
}
