#include <gtest/gtest.h>

#include "finemoe/config.hpp"
#include "finemoe/counting.hpp"

using namespace finemoe;

// Hand-computed from SCIENCE.md: N = n_blocks d² (8E+4), N_active = 12 d² n_blocks,
// F/token = (12 d² 6 + d E G 14) n_blocks.
TEST(Counting, PaperFormulasByHand) {
  // d = 512, 8 blocks, E = 64, G = 16
  EXPECT_DOUBLE_EQ(law_N(512, 8, 64), 8.0 * 512 * 512 * 516);          // 1,082,130,432
  EXPECT_DOUBLE_EQ(law_N(512, 8, 64), 1082130432.0);
  EXPECT_DOUBLE_EQ(law_N_active(512, 8), 25165824.0);                  // 12·262144·8
  EXPECT_DOUBLE_EQ(law_flops_per_token(512, 8, 64, 16), (12.0 * 262144 * 6 + 512.0 * 1024 * 14) * 8);
  EXPECT_DOUBLE_EQ(law_flops_per_token(512, 8, 64, 16), 209715200.0);
  // Dense: F = 6 N per token, no router term.
  EXPECT_DOUBLE_EQ(law_flops_per_token(256, 4, 1, 1, true), 6.0 * law_N(256, 4, 1));
  // N = 43 N_active for E = 64.
  EXPECT_DOUBLE_EQ(law_N(768, 12, 64) / law_N_active(768, 12), 43.0);
}

TEST(Counting, ModelCountsOfAConfig) {
  Config c;
  c.model.d_model = 128;
  c.model.n_blocks = 2;
  c.model.vocab_size = 512;
  c.model.seq_len = 64;
  c.moe.experts = 8;
  c.moe.granularity = 4;
  ModelCounts k = count_model(c.shape());
  EXPECT_EQ(k.n_experts, 32);
  EXPECT_EQ(k.d_ff, 512);
  EXPECT_EQ(k.d_expert, 128);
  EXPECT_DOUBLE_EQ(k.N, 2.0 * 128 * 128 * 68);            // 2,228,224
  EXPECT_DOUBLE_EQ(k.N_active, 393216.0);
  EXPECT_DOUBLE_EQ(k.router_params, 2.0 * 128 * 32);       // 8192
  EXPECT_DOUBLE_EQ(k.embedding_params, 512.0 * 128 * 2 + 64.0 * 128);  // 139264
  // per block: 4d (2 LN) + 3d²+3d + d²+d + 8d²E + 2d (moe norm) = 1,114,624 + router
  const double per_block = 4 * 128 + 3 * 16384 + 3 * 128 + 16384 + 128 + 8.0 * 16384 * 8 + 2 * 128;
  EXPECT_DOUBLE_EQ(k.total_params, 2 * per_block + 8192 + 139264 + 256);
  EXPECT_DOUBLE_EQ(k.flops_per_token, (12.0 * 16384 * 6 + 128.0 * 32 * 14) * 2);  // 2,473,984
  EXPECT_DOUBLE_EQ(k.model_flops_per_token, k.flops_per_token + 2 * 6.0 * 64 * 128 + 6.0 * 128 * 512);
}

TEST(Counting, DenseConfigHasNoRouter) {
  Config c;
  c.model.ffn = Ffn::dense;
  ModelCounts k = count_model(c.shape());
  EXPECT_EQ(k.router_params, 0.0);
  EXPECT_EQ(k.n_experts, 1);
  EXPECT_DOUBLE_EQ(k.flops_per_token, 6.0 * k.N);
}

// The memory estimate by hand: d 64, 1 block, E 8, G 2, seq 16, vocab 100,
// 1 head; 32 tokens. Stored params (count_model): per block 4d + 3d² + 3d +
// d² + d + 8d²E + 2d (output norm) = 279,168, router 1·64·16 = 1024,
// embeddings 100·64 + 16·64 + 64·100 = 13,824, final LN 128: 294,144.
// Activations per token: 12d + H·T + E·G + d = 768 + 16 + 16 + 64 = 864 per
// block, + 2d + V = 228: 1092 floats.
TEST(Counting, TrainMemoryEstimateByHand) {
  ModelShape s;
  s.d_model = 64;
  s.n_blocks = 1;
  s.vocab_size = 100;
  s.seq_len = 16;
  s.expansion = 8;
  s.granularity = 2;
  s.dense = false;
  ASSERT_DOUBLE_EQ(count_model(s).total_params, 294144.0);
  MemoryEstimate m = train_memory_bytes(s, 1, 32);
  EXPECT_DOUBLE_EQ(m.param_bytes, 16.0 * 294144);
  EXPECT_DOUBLE_EQ(m.activation_bytes, 4.0 * 1092 * 32);
  EXPECT_DOUBLE_EQ(m.total(), m.param_bytes + m.activation_bytes);
  // EP 4 keeps a quarter of the expert weights (8·d²·E = 262,144) per rank.
  MemoryEstimate ep = train_memory_bytes(s, 1, 32, 4);
  EXPECT_DOUBLE_EQ(ep.param_bytes, 16.0 * (294144 - 262144 + 262144 / 4));
  EXPECT_DOUBLE_EQ(ep.activation_bytes, m.activation_bytes);
}
