// Experts: the K local ReLU MLPs y = relu(x·W1_k)·W2_k, computed with ONE
// Backend::grouped_gemm per matrix product (forward 2, backward 4). The
// padded copies and the ReLU mask are Backend kernels too (kernels.hpp, "MoE
// kernels"); this class only sizes buffers and builds the per-expert pointer
// arrays.
//
// Input rows arrive packed per local expert (the Dispatcher's recv layout).
// The weight-gradient products reduce over an expert's rows, a per-problem K
// that grouped_gemm (per-problem M only) cannot express; so when the experts'
// row counts differ (token choice) x, h, dy and dh are used in a PADDED layout
// [K, Rmax, ·] whose rows past R_k are zero. Adding those zero rows changes
// nothing. When every expert has the same row count (expert choice) the
// packed layout IS the padded one and the caller's buffers are used as they
// are, without copies.
//
// What is kept from forward to backward: h (padded, this object's own), and x
// only when forward is asked to keep it (keep_x, the EP > 1 path where x came
// through an all-to-all). Otherwise backward gets the same packed x rows again
// from the caller, which re-gathers them from the layer input. Copies that
// live within one call use the model's shared moe::Scratch (workspace.hpp).
//
// Private to src/moe.
#pragma once
#include <cstdint>
#include <vector>

#include "finemoe/kernels.hpp"

namespace finemoe::moe {

struct Scratch;

class Experts {
 public:
  // `ws` (the model's shared scratch) must outlive this object.
  Experts(Backend& be, Scratch& ws, int64_t n_local, int64_t d_model, int64_t d_expert);
  // x [R, d] packed: counts[k] rows for local expert k. y [R, d] packed.
  // w1 [K, d, de], w2 [K, de, d]. Keeps h, and x if keep_x.
  void forward(const float* x, const std::vector<int64_t>& counts, const float* w1, const float* w2, float* y,
               bool keep_x);
  // dy [R, d] packed like the last forward; x [R, d] the last forward's input
  // rows (ignored, may be null, if forward kept x). dw1/dw2 accumulate (+=);
  // dx [R, d] packed is overwritten.
  void backward(const float* dy, const float* x, const float* w1, const float* w2, float* dw1, float* dw2,
                float* dx);

 private:
  void to_padded(const float* packed, int64_t width, float* padded) const;
  void zero_padding(float* padded, int64_t width) const;

  Backend& be_;  // the rank's backend: every product and copy runs on it
  Scratch& ws_;
  int64_t K_, d_, de_;
  int64_t rmax_ = 0;
  bool uniform_ = false;  // every expert has rmax_ rows: packed == padded, no copies
  bool keep_x_ = false;
  const float* x_kept_ = nullptr;          // x in padded layout when keep_x_
  std::vector<int64_t> counts_, offsets_;  // host: packed row offsets per expert (kernels.hpp, "Memory")
  DeviceBuffer<float> xp_, hp_;            // padded [K, rmax, ·], grow-only; xp_ only when keep_x
  // Host arrays of device pointers and problem sizes for grouped_gemm,
  // rebuilt per call (no allocation).
  std::vector<const float*> a_, b_;
  std::vector<float*> c_;
  std::vector<int64_t> m_;
};

}  // namespace finemoe::moe
