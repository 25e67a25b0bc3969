// AdamW with decoupled weight decay, global-norm gradient clipping, and the
// learning-rate schedule (linear warmup, cosine decay to a floor).
#pragma once
#include <cstdint>
#include <string>

#include "finemoe/backend.hpp"
#include "finemoe/comm.hpp"
#include "finemoe/config.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/params.hpp"

namespace finemoe {

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// One AdamW update of every tensor in `store` (this rank's part) with
// gradients already synchronised. `t` is the 1-based step number used for bias
// correction. Weight decay only where ParamInfo::decay (matrices):
//   m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²
//   p -= lr · ( m/(1-β1^t) / (sqrt(v/(1-β2^t)) + eps) + wd · p )
//
// One fused pass over every tensor (the update is memory-bound: each element's
// p, g, m, v are read once and written once), with two options folded in:
//   grad_scale  multiplies g before use (global-norm clipping), bit-identical
//               to scale_grads(store, grad_scale) followed by the update;
//   zero_grads  leaves g = 0 afterwards, so the next step needs no separate
//               zeroing pass over the gradient buffers.
// Each tensor's pass is the backend's adamw_step kernel (kernels.hpp); `be`
// is the rank's backend (the trainer's, resolved from run.device). Here and
// in global_grad_norm, scale_grads and first_nonfinite_grad below, `be` must
// be the backend whose memory holds the store (ParamStore::backend()):
// Error otherwise.
struct AdamWStepOptions {
  float grad_scale = 1.0f;
  bool zero_grads = false;
};
void adamw_update(ParamStore& store, const AdamWParams& hp, int64_t t, const AdamWStepOptions& opts = {},
                  Backend& be = cpu_backend());

// Registers every parameter buffer of `store` with the bf16 weight cache
// (backend.hpp) for the lifetime of the returned object; adamw_update then
// starts a new epoch after each update.
backend::RegisteredWeights register_parameters(const ParamStore& store);

// Global L2 norm of all gradients across the process grid (replicated part
// counted once, expert shards summed over the EP group). Each class buffer's
// sum of squares is the backend's deterministic sum_squares kernel.
double global_grad_norm(const ParamStore& store, const Comm& comm, Backend& be = cpu_backend());

// Multiplies every gradient by `factor` (the backend's scale kernel).
void scale_grads(ParamStore& store, float factor, Backend& be = cpu_backend());

// Name of the first tensor (in declaration order) whose gradient holds a NaN
// or Inf on this rank, or "" (the backend's find_nonfinite kernel).
std::string first_nonfinite_grad(const ParamStore& store, Backend& be = cpu_backend());

// Sums gradients over the ranks that share each tensor: replicated over the
// world, expert shards over their DP group (deterministic order).
void sync_grads(ParamStore& store, const Comm& comm);

// Learning rate for the 0-based step `step` of `total`: linear warmup from
// lr/warmup to lr over `warmup` steps, then cosine from lr to lr_min at the
// last step.
double lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double lr_min);

}  // namespace finemoe
