// The decoder-only transformer (SCIENCE.md): learned token + position
// embeddings, n_blocks pre-LN blocks (causal MHA, head dim 64; FFN = dense ReLU
// MLP or fine-grained MoE with an optional output LayerNorm), final LayerNorm,
// untied head, softmax cross-entropy in nats/token.
//
// Tensor names (checkpoints use them verbatim):
//   wte [V,d]  wpe [T,d]  ln_f.w/b [d]  head.w [d,V]
//   blocks.{i}.ln1.w/b  blocks.{i}.attn.qkv.w [d,3d] .qkv.b [3d]
//   blocks.{i}.attn.proj.w [d,d] .proj.b [d]  blocks.{i}.ln2.w/b
//   dense: blocks.{i}.ffn.fc.w [d,4d]  blocks.{i}.ffn.proj.w [4d,d]
//   moe:   blocks.{i}.moe.router.w [d,E·G]  blocks.{i}.moe.norm.w/b [d]
//          blocks.{i}.moe.experts.w1 [E·G,d,d_e]  blocks.{i}.moe.experts.w2 [E·G,d_e,d]   (expert class)
//   buffer (not trained; token choice only): blocks.{i}.moe.router.bias [E·G]
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/moe.hpp"
#include "finemoe/params.hpp"

namespace finemoe {

// Declares every tensor of the model in `store` (does not finalize).
void declare_parameters(const Config& cfg, ParamStore& store);

// Initialises every parameter (SCIENCE.md): truncated normal (±2σ) with
// σ = sqrt(init_scale / fan_in); expert w2 uses fan_in = 4·d; LayerNorm weights
// 1, biases 0. Each tensor, and each expert row, draws from its own
// counter-based stream keyed by (seed, name, global row), so the weights do not
// depend on how experts are sharded over ranks. The random draws run on `be`
// (Backend::init_truncated_normal, the rank's backend): every backend gives
// the same bits. `be` must be the store's backend (ParamStore::backend()).
void init_parameters(const Config& cfg, ParamStore& store, uint64_t seed, Backend& be = cpu_backend());

class Transformer {
 public:
  // `store` must come from declare_parameters + finalize(be). `dispatcher`
  // moves MoE tokens (LocalDispatcher for one EP rank). `be` runs every
  // kernel of this model and its MoE layers (the rank's backend; kernels.hpp)
  // and must be the store's backend (Error otherwise).
  Transformer(const Config& cfg, ParamStore& store, Dispatcher& dispatcher, Backend& be = cpu_backend());
  ~Transformer();

  // tokens, targets: [B, T] for this rank (T = model.seq_len). Returns the mean
  // loss over these B·T tokens (nats). Keeps activations for backward.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t B);
  // Accumulates into the store's gradients the gradient of
  // `loss_scale` × (mean loss of the last forward + aux_loss()). With
  // loss_scale = local_tokens / global_tokens the ranks' gradients sum to the
  // gradient of the global mean loss plus the global auxiliary loss.
  void backward(double loss_scale);
  // The auxiliary router losses of the last forward (moe.balance_loss ×
  // balance + moe.z_loss × z, summed over the MoE blocks; this rank's
  // tokens). 0 for a dense model or with both coefficients 0. Never part of
  // forward()'s or evaluate()'s loss, which is the cross-entropy alone.
  double aux_loss() const;
  // Per MoE block, the selection counts of the last forward
  // (RoutingStats::selected_per_expert); empty for a dense model.
  std::vector<std::vector<int64_t>> selection_counts() const;
  // Token choice: bias_i += rate·sign(mean − load_i) on every block's
  // blocks.{i}.moe.router.bias, `loads[block]` being that block's selection
  // counts summed over every rank (moe.hpp, update_selection_bias). No-op for
  // dense models and expert choice.
  void update_selection_bias(const std::vector<std::vector<int64_t>>& loads, double rate);
  // Forward only (evaluation): mean loss, no activations kept for backward.
  double evaluate(const int32_t* tokens, const int32_t* targets, int64_t B);

  // Per-token losses (nats) of the last forward/evaluate, [B·T] row-major,
  // copied to the host into `host` (resized). (The final evaluation's
  // per-sequence means.)
  void token_losses(std::vector<float>& host) const;

  // Routing telemetry of the last forward, one entry per block (empty if dense).
  std::vector<RoutingStats> routing_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace finemoe
