// Scratch shared by the MoE layers of one model, in the rank's Backend memory.
//
// A model has one MoELayer per block, and each layer's dispatch/combine and
// gradient buffers are [assignments, d] = G copies of the block's tokens. Only
// what backward needs (x, the expert outputs y, the hidden activations h, the
// router probabilities) has to live from a layer's forward to its backward;
// everything else lives within ONE forward or ONE backward call, so the L
// layers can share a single copy instead of keeping L (at G = 16, d = 512,
// 1024 tokens that was 7 x 33 MB per block). The Transformer makes one
// (make_moe_scratch) and hands it to its layers; a layer made without one
// owns its own, so two models never share scratch. Buffers are grow-only, so
// steady-state steps do not allocate.
//
// Private to src/moe.
#pragma once
#include "finemoe/kernels.hpp"
#include "finemoe/moe.hpp"

namespace finemoe::moe {

struct Scratch {
  explicit Scratch(Backend& be)
      : dy_send(be), gx_send(be), dprob(be), dlogits(be), xpad(be), dypad(be), dhpad(be) {}
  DeviceBuffer<float> dy_send;   // [A, d] output gradient per assignment
  DeviceBuffer<float> gx_send;   // [A, d] expert input gradient per assignment
  DeviceBuffer<float> dprob;     // [A]
  DeviceBuffer<float> dlogits;   // [T, E·G]
  DeviceBuffer<float> xpad, dypad, dhpad;  // experts' padded copies (only when row counts differ)
};

}  // namespace finemoe::moe
