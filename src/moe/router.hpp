// Router: x -> fp32 logits -> softmax probabilities -> assignments.
//
// Private to src/moe. The router never looks at expert weights or ranks: it
// only decides which (token, global expert) pairs exist and with which weight.
// Its output is the list of assignments sorted by GLOBAL expert id, then by
// token index, which is exactly the send layout of the Dispatcher contract.
#pragma once
#include <cstdint>
#include <vector>

#include "finemoe/memory.hpp"
#include "finemoe/moe.hpp"

namespace finemoe::moe {

struct Routes {
  int64_t T = 0;                      // tokens routed
  Buffer<float> logits;               // [T, EG] (grow-only capacity; first T·EG valid)
  Buffer<float> probs;                // [T, EG] softmax over experts
  std::vector<int64_t> counts;        // [EG] assignments per global expert (after drops)
  std::vector<int64_t> tok;           // [A] token of assignment i (expert-major, token-ascending)
  std::vector<int64_t> expert;        // [A] global expert of assignment i
  std::vector<float> weight;          // [A] combine weight = probs[tok, expert]
  // Per-token view (CSR) of the same assignments, experts ascending: token t
  // owns assignment ids by_tok[tok_off[t] .. tok_off[t+1]).
  std::vector<int64_t> tok_off;       // [T+1]
  std::vector<int64_t> by_tok;        // [A]
  int64_t dropped = 0;                // token choice: assignments refused for capacity
  int64_t wanted = 0;                 // token choice: T·top_k; expert choice: 0
  // Scratch reused across steps (no allocation in steady state).
  std::vector<int64_t> choice;        // token choice: [T, top_k] chosen expert or -1 if dropped
  std::vector<int64_t> scratch;       // per-thread index arrays for the top-c / top-k searches
  std::vector<int64_t> load;          // [EG] running per-expert fill
  std::vector<double> entropy;        // [T] per-token router entropy
  int64_t assignments() const { return int64_t(tok.size()); }
};

// logits = x·Wr (fp32, own loops: the router stays fp32 whatever precision the
// GEMM backend uses), probs = softmax(logits) per token, then selection by
// shape.routing. Throws Error if T is not a multiple of group_size (expert
// choice). Reuses the storage in `r`.
void route_forward(const MoEShape& shape, const float* x, const float* Wr, int64_t T, Routes& r);

// Token choice capacity per expert for a routing group of T tokens:
// ceil(capacity_factor · T · top_k / (E·G)).
int64_t token_choice_capacity(const MoEShape& shape, int64_t T);

// Backward of the router given dprob[i] = ∂L/∂weight[i] for every assignment.
// Softmax backward into dlogits (only selected entries carry dprob; all
// entries get the -p·Σ term), then dWr += xᵀ·dlogits and dx += dlogits·Wrᵀ.
// `dlogits` is scratch of at least T·EG floats.
void route_backward(const MoEShape& shape, const Routes& r, const float* dprob, const float* x,
                    const float* Wr, float* dlogits, float* dWr, float* dx);

// Mean over tokens of the softmax entropy (nats).
double router_entropy(Routes& r, int64_t n_experts);

}  // namespace finemoe::moe
