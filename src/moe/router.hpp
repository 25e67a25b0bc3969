// Router: x -> fp32 logits -> softmax probabilities -> assignments.
//
// Private to src/moe. Orchestration over the rank's Backend: the softmax, the
// selections, the CSR view and the statistics are its MoE kernels
// (kernels.hpp), the products its gemm_fp32. The router never looks at expert
// weights or ranks: it
// only decides which (token, global expert) pairs exist and with which weight.
// Its output is the list of assignments sorted by GLOBAL expert id, then by
// token index, which is exactly the send layout of the Dispatcher contract.
#pragma once
#include <cstdint>
#include <vector>

#include "finemoe/kernels.hpp"
#include "finemoe/moe.hpp"

namespace finemoe::moe {

// Where each array lives follows the MoE kernels' contract (kernels.hpp):
// what is sized by tokens or assignments is in the backend's memory
// (DeviceBuffer, grow-only: the first T·EG / A / T+1 entries are valid);
// the per-expert counts are host vectors, because the dispatcher sizes its
// exchanges and the experts their grouped GEMM problems from them on the host.
struct Routes {
  explicit Routes(Backend& be)
      : logits(be), probs(be), tok(be), expert(be), weight(be), tok_off(be), by_tok(be), choice(be), entropy(be),
        lse(be), group_frac(be), group_terms(be) {}
  int64_t T = 0;                      // tokens routed
  int64_t A = 0;                      // assignments (after drops)
  DeviceBuffer<float> logits;         // [T, EG]
  DeviceBuffer<float> probs;          // [T, EG] softmax over experts
  std::vector<int64_t> counts;        // host [EG] assignments per global expert (after drops)
  DeviceBuffer<int64_t> tok;          // [A] token of assignment i (expert-major, token-ascending)
  DeviceBuffer<int64_t> expert;       // [A] global expert of assignment i
  DeviceBuffer<float> weight;         // [A] combine weight = probs[tok, expert]
  // Per-token view (CSR) of the same assignments, experts ascending: token t
  // owns assignment ids by_tok[tok_off[t] .. tok_off[t+1]).
  DeviceBuffer<int64_t> tok_off;      // [T+1]
  DeviceBuffer<int64_t> by_tok;       // [A]
  int64_t dropped = 0;                // token choice: assignments refused for capacity
  int64_t wanted = 0;                 // token choice: T·top_k; expert choice: 0
  // Reused across steps (no allocation in steady state). The kernels' own
  // scratch (sort keys, cursors) belongs to the backend.
  DeviceBuffer<int64_t> choice;       // token choice: [T, top_k] chosen expert or -1 if dropped
  DeviceBuffer<double> entropy;       // [T] per-token router entropy
  // Auxiliary-loss state (moe.hpp, "Auxiliary losses"), filled by every forward.
  DeviceBuffer<float> lse;            // [T] logsumexp of each token's logits
  std::vector<int64_t> selected;      // host [EG] selection counts before capacity drops (all groups)
  std::vector<int64_t> group_sel;     // host [groups, EG] n_{g,i}
  DeviceBuffer<double> group_frac;    // [groups, EG] f_{g,i} = n_{g,i} / Σ_j n_{g,j}
  DeviceBuffer<double> group_terms;   // [groups] (S_g/T)·B_g, summed in group order
  double balance = 0;                 // B of the layer's T tokens
  double z = 0;                       // Z of the layer's T tokens
  int64_t assignments() const { return A; }
  int64_t groups(int64_t group_size) const { return (T + group_size - 1) / group_size; }
};

// logits = x·Wr (Backend::gemm_fp32: the router stays fp32 whatever precision
// the GEMM backend uses), probs = softmax(logits) per token, then selection by
// shape.routing (token choice ranks p + bias when `bias` [EG] is given; the
// combine weights are p), then the auxiliary-loss statistics (balance, z).
// Throws Error if T is not a multiple of group_size (expert choice), or if a
// bias is given with expert choice. Reuses the storage in `r`.
void route_forward(Backend& be, const MoEShape& shape, const float* x, const float* Wr, const float* bias, int64_t T,
                   Routes& r);

// Token choice capacity per expert for a routing group of T tokens:
// ceil(capacity_factor · T · top_k / (E·G)).
int64_t token_choice_capacity(const MoEShape& shape, int64_t T);

// Backward of the router given dprob[i] = ∂L/∂weight[i] for every assignment.
// Softmax backward into dlogits (only selected entries carry dprob; all
// entries get the -p·Σ term), then dWr += xᵀ·dlogits and dx += dlogits·Wrᵀ.
// With shape.balance_loss or shape.z_loss non-zero, aux_scale × their
// gradients are added (the balance loss's through the softmax, dense over
// experts; the z-loss's straight into dlogits). `dlogits` is scratch of at
// least T·EG floats.
void route_backward(Backend& be, const MoEShape& shape, const Routes& r, const float* dprob, double aux_scale,
                    const float* x, const float* Wr, float* dlogits, float* dWr, float* dx);

// Mean over tokens of the softmax entropy (nats).
double router_entropy(Backend& be, Routes& r, int64_t n_experts);

}  // namespace finemoe::moe
