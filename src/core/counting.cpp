#include "finemoe/counting.hpp"

namespace finemoe {

double law_N(double d, double n_blocks, double E) { return n_blocks * d * d * (8.0 * E + 4.0); }

double law_N_active(double d, double n_blocks) { return 12.0 * d * d * n_blocks; }

double law_flops_per_token(double d, double n_blocks, double E, double G, bool dense) {
  double router = dense ? 0.0 : d * E * G * kRouterFlopsCoeff;
  return (12.0 * d * d * kFlopsPerParamFwdBwd + router) * n_blocks;
}

ModelCounts count_model(const ModelShape& s) {
  ModelCounts c;
  const double d = double(s.d_model), L = double(s.n_blocks), V = double(s.vocab_size),
               T = double(s.seq_len);
  const double E = s.dense ? 1.0 : double(s.expansion);
  const double G = s.dense ? 1.0 : double(s.granularity);
  c.n_experts = ffn_experts(s.dense, s.expansion, s.granularity);
  c.d_ff = ffn_hidden(s.d_model);
  c.d_expert = ffn_expert_width(s.dense, s.d_model, s.granularity);
  c.N = law_N(d, L, E);
  c.N_active = law_N_active(d, L);
  c.embedding_params = V * d + T * d + d * V;
  c.router_params = s.dense ? 0.0 : L * d * E * G;
  // What the model really stores per block: 2 LayerNorms (2d each), qkv
  // weight+bias (3d²+3d), attention projection (d²+d), FFN/expert weights
  // (no biases: 8d²·E), optional MoE output LayerNorm, router. Plus final LN.
  double per_block = 2 * 2 * d + 3 * d * d + 3 * d + d * d + d + 8 * d * d * E;
  if (!s.dense && s.moe_output_norm) per_block += 2 * d;
  c.total_params = L * per_block + c.router_params + c.embedding_params + 2 * d;
  c.flops_per_token = law_flops_per_token(d, L, E, G, s.dense);
  // MFU counts what the hardware really does: the law's F plus causal
  // attention (QK^T and AV: 2·2·T·d per token forward, ×3 fwd+bwd, halved by
  // the mask) and the output head (6·d·V).
  c.model_flops_per_token = c.flops_per_token + L * 6.0 * T * d + 6.0 * d * V;
  return c;
}

MemoryEstimate train_memory_bytes(const ModelShape& s, int64_t n_heads, double tokens, int64_t expert_parallel) {
  const ModelCounts c = count_model(s);
  const double d = double(s.d_model), L = double(s.n_blocks), T = double(s.seq_len), V = double(s.vocab_size);
  const double EP = double(expert_parallel < 1 ? 1 : expert_parallel);
  const double expert_weights = s.dense ? 0.0 : L * 8.0 * d * d * double(s.expansion);
  MemoryEstimate m;
  m.param_bytes = 16.0 * (c.total_params - expert_weights + expert_weights / EP);
  double per_block = 8 * d + 4 * d + double(n_heads) * T;
  if (!s.dense) per_block += double(c.n_experts) + d;
  const double per_token = L * per_block + 2 * d + V;
  m.activation_bytes = 4.0 * per_token * tokens;
  return m;
}

}  // namespace finemoe
