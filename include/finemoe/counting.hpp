// Parameter and FLOP counting: the ONE place these formulas live.
//
// Trainer (start-up banner, MFU, metrics.h5 attributes), sweep generator
// (sizing runs by FLOPs) and moe-analyze (N, D, F of every run, compute-optimal
// allocation) all call these functions. Conventions follow SCIENCE.md:
//
//   N        = n_blocks · d² · (8E + 4)     non-embedding, router excluded
//              (attention 4d², E experts' worth of FFN 8d² each; the law's N)
//   N_active = 12 · d² · n_blocks            dense-equivalent size ("64×1B")
//   F/token  = (12 · d² · c_f + d · E · G · c_r) · n_blocks,  c_f = 6, c_r = 14
//              (paper's training FLOPs; the second term is the router)
//
// Dense models use E = 1, G = 1 and no router term: F/token = 6·N.
#pragma once
#include <cstdint>

namespace finemoe {

constexpr double kFlopsPerParamFwdBwd = 6.0;   // c_f: 2 forward + 4 backward
constexpr double kRouterFlopsCoeff = 14.0;      // c_r: paper's router constant

// The FFN's shape, the one definition every part of finemoe uses (Config's
// derived quantities, count_model, the MoE layer's shape): E·G experts of
// width 4d/G, or one "expert" of width 4d for a dense model.
constexpr int64_t ffn_hidden(int64_t d_model) { return 4 * d_model; }
constexpr int64_t ffn_experts(bool dense, int64_t E, int64_t G) { return dense ? 1 : E * G; }
constexpr int64_t ffn_expert_width(bool dense, int64_t d_model, int64_t G) {
  return dense ? ffn_hidden(d_model) : ffn_hidden(d_model) / G;
}

struct ModelShape {
  int64_t d_model = 0;
  int64_t n_blocks = 0;
  int64_t vocab_size = 0;
  int64_t seq_len = 0;
  int64_t expansion = 1;    // E
  int64_t granularity = 1;  // G
  bool dense = true;        // dense FFN (no router) instead of MoE
  bool moe_output_norm = true;
};

struct ModelCounts {
  double N = 0;                  // law's N (see above)
  double N_active = 0;           // 12 d² n_blocks
  double embedding_params = 0;   // token + position embeddings + untied head
  double router_params = 0;      // n_blocks · d · E·G (0 for dense)
  double total_params = 0;       // every float the model stores (biases, norms included)
  double flops_per_token = 0;    // paper's training F/token (law, sweep sizing)
  double model_flops_per_token = 0;  // F/token + attention scores + head: used for MFU
  int64_t n_experts = 1;         // E·G
  int64_t d_ff = 0;              // 4 d
  int64_t d_expert = 0;          // d_ff / G
};

ModelCounts count_model(const ModelShape& s);

// Bytes one rank cannot train without (the analytic minimum; workspaces, bf16
// weight copies and the allocator's slack come on top):
//   * 16 B per stored param: fp32 value, gradient and two AdamW moments, with
//     the expert weights (8·d²·E per block) split over `expert_parallel` ranks;
//   * 4 B per activation float that backward keeps, for `tokens` tokens: per
//     block ln1 out, qkv (3d), attention output, the residual stream, ln2 out
//     and the FFN output (8d in all), the FFN hidden activations (4d active per
//     token, whatever G) and the attention probabilities (n_heads·seq_len); MoE
//     blocks add the router probabilities (E·G) and the output norm (d); plus
//     the embedding output, final LayerNorm (2d) and the vocabulary softmax (V).
// moe-bench reports peak RSS against it; moe-train refuses a config whose
// estimate exceeds the memory available before allocating anything.
struct MemoryEstimate {
  double param_bytes = 0;       // params + grads + AdamW moments
  double activation_bytes = 0;  // what backward keeps
  double total() const { return param_bytes + activation_bytes; }
};
MemoryEstimate train_memory_bytes(const ModelShape& s, int64_t n_heads, double tokens, int64_t expert_parallel = 1);

// The law's formulas on their own, for analysis over (d, n_blocks, E, G).
double law_N(double d_model, double n_blocks, double E);
double law_N_active(double d_model, double n_blocks);
double law_flops_per_token(double d_model, double n_blocks, double E, double G, bool dense = false);

}  // namespace finemoe
