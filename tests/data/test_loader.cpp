// BatchLoader: global step s always sees the same tokens, however many ranks.
#include <gtest/gtest.h>

#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/data.hpp"
#include "finemoe/error.hpp"
#include "finemoe/synthetic.hpp"

using namespace finemoe;

TEST(Loader, StepTokensIdenticalFor1_2_4Ranks) {
  SynthParams p;
  p.doc_len = 100;  // sequences straddle documents
  SyntheticCorpus src(p, kSynthTrainStream);
  const int64_t B = 8, S = 24;
  for (int64_t step : {0, 1, 5, 1000003}) {
    std::vector<int32_t> ref_t(size_t(B * S)), ref_y(size_t(B * S));
    BatchLoader one(src, B, S, 0, 1);
    one.load(step, ref_t.data(), ref_y.data());
    // Definition: sequence j starts at (step·B + j)·S; targets are shifted by one.
    std::vector<int32_t> raw(size_t(B * S + 1));
    src.read(step * B * S, B * S + 1, raw.data());
    for (int64_t j = 0; j < B; ++j)
      for (int64_t i = 0; i < S; ++i) {
        ASSERT_EQ(ref_t[size_t(j * S + i)], raw[size_t(j * S + i)]);
        ASSERT_EQ(ref_y[size_t(j * S + i)], raw[size_t(j * S + i + 1)]);
      }
    for (int world : {2, 4}) {
      std::vector<int32_t> all_t, all_y;
      for (int r = 0; r < world; ++r) {
        BatchLoader l(src, B, S, r, world);
        ASSERT_EQ(l.local_batch(), B / world);
        EXPECT_EQ(l.tokens_per_step(), B * S);
        std::vector<int32_t> t(size_t(l.local_batch() * S)), y(t.size());
        l.load(step, t.data(), y.data());
        all_t.insert(all_t.end(), t.begin(), t.end());
        all_y.insert(all_y.end(), y.begin(), y.end());
      }
      EXPECT_EQ(all_t, ref_t) << "world " << world << " step " << step;
      EXPECT_EQ(all_y, ref_y) << "world " << world << " step " << step;
    }
  }
}

TEST(Loader, ConsecutiveStepsDoNotRepeat) {
  Config cfg;
  auto src = make_train_source(cfg);
  BatchLoader l(*src, 4, 64, 0, 1);
  std::vector<int32_t> a(256), b(256), y(256);
  l.load(0, a.data(), y.data());
  l.load(1, b.data(), y.data());
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  EXPECT_LT(same, 128);
}

TEST(Loader, TrainAndValidationSourcesDiffer) {
  Config cfg;
  auto tr = make_train_source(cfg), va = make_val_source(cfg);
  std::vector<int32_t> a(512), b(512);
  tr->read(0, 512, a.data());
  va->read(0, 512, b.data());
  EXPECT_NE(a, b);
  EXPECT_EQ(tr->vocab_size(), cfg.model.vocab_size);
}

TEST(Loader, BadRankSplitIsAConfigError) {
  SyntheticCorpus src(SynthParams{}, 0);
  EXPECT_THROW(BatchLoader(src, 6, 8, 0, 4), ConfigError);
  EXPECT_THROW(BatchLoader(src, 8, 8, 4, 4), ConfigError);
}
