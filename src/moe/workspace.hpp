// Scratch shared by every MoE layer that runs on this thread.
//
// A model has one MoELayer per block, and each layer's dispatch/combine and
// gradient buffers are [assignments, d] = G copies of the block's tokens. Only
// what backward needs (x, the expert outputs y, the hidden activations h, the
// router probabilities) has to live from a layer's forward to its backward;
// everything else lives within ONE forward or ONE backward call, so the L
// layers can share a single copy instead of keeping L (at G = 16, d = 512,
// 1024 tokens that was 7 x 33 MB per block). thread_local: two models trained
// on two threads never share scratch. Buffers are grow-only, so steady-state
// steps do not allocate.
//
// Private to src/moe.
#pragma once
#include "finemoe/memory.hpp"
#include "finemoe/moe.hpp"

namespace finemoe::moe {

struct Scratch {
  Buffer<float> dy_send;   // [A, d] output gradient per assignment
  Buffer<float> gx_send;   // [A, d] expert input gradient per assignment
  Buffer<float> dprob;     // [A]
  Buffer<float> dlogits;   // [T, E·G]
  Buffer<float> xpad, dypad, dhpad;  // experts' padded copies (only when row counts differ)
};

Scratch& scratch();

template <typename T>
void ensure(Buffer<T>& b, size_t n) {
  if (b.size() < n) b.resize(n);  // grow-only: no allocation in steady state
}


}  // namespace finemoe::moe
