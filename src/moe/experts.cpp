// Experts forward/backward as grouped GEMMs of the rank's Backend (see
// experts.hpp for the padded layout and why it exists). Orchestration only:
// the per-expert loops here build grouped_gemm's pointer arrays (K entries of
// host metadata); row copies, padding and the ReLU mask are Backend kernels.
#include "experts.hpp"

#include <algorithm>

#include "finemoe/error.hpp"
#include "workspace.hpp"

namespace finemoe::moe {

Experts::Experts(Backend& be, Scratch& ws, int64_t n_local, int64_t d_model, int64_t d_expert)
    : be_(be), ws_(ws), K_(n_local), d_(d_model), de_(d_expert), counts_(size_t(n_local)),
      offsets_(size_t(n_local)), xp_(be), hp_(be), a_(size_t(n_local)), b_(size_t(n_local)), c_(size_t(n_local)),
      m_(size_t(n_local)) {}

void Experts::to_padded(const float* packed, int64_t width, float* padded) const {
  be_.moe_to_padded(packed, counts_.data(), offsets_.data(), K_, rmax_, width, padded);
}

void Experts::zero_padding(float* padded, int64_t width) const {
  be_.moe_zero_padding(padded, counts_.data(), K_, rmax_, width);
}

void Experts::forward(const float* x, const std::vector<int64_t>& counts, const float* w1, const float* w2,
                      float* y, bool keep_x) {
  int64_t off = 0;
  rmax_ = 0;
  for (int64_t k = 0; k < K_; ++k) {
    counts_[size_t(k)] = counts[size_t(k)];
    offsets_[size_t(k)] = off;
    off += counts[size_t(k)];
    rmax_ = std::max(rmax_, counts[size_t(k)]);
  }
  uniform_ = off == K_ * rmax_;
  keep_x_ = keep_x;
  const int64_t rows = K_ * rmax_;
  hp_.grow(rows * de_);
  const float* xp = x;
  if (keep_x || !uniform_) {  // a padded copy: kept (own buffer) or for this call only (scratch)
    DeviceBuffer<float>& buf = keep_x ? xp_ : ws_.xpad;
    buf.grow(rows * d_);
    to_padded(x, d_, buf.data());
    xp = buf.data();
  }
  x_kept_ = keep_x ? xp : nullptr;

  // h_k = relu(x_k · W1_k)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = xp + k * rmax_ * d_;
    b_[size_t(k)] = w1 + k * d_ * de_;
    c_[size_t(k)] = hp_.data() + k * rmax_ * de_;
  }
  be_.grouped_gemm(false, false, K_, m_.data(), de_, d_, 1.0f, a_.data(), d_, b_.data(), de_, 0.0f,
                   c_.data(), de_, backend::Epilogue::relu);  // ReLU fused per expert
  if (!uniform_) zero_padding(hp_.data(), de_);

  // y_k = h_k · W2_k, written straight into the packed output
  for (int64_t k = 0; k < K_; ++k) {
    a_[size_t(k)] = hp_.data() + k * rmax_ * de_;
    b_[size_t(k)] = w2 + k * de_ * d_;
    c_[size_t(k)] = y + offsets_[size_t(k)] * d_;
  }
  be_.grouped_gemm(false, false, K_, m_.data(), d_, de_, 1.0f, a_.data(), de_, b_.data(), d_, 0.0f,
                   c_.data(), d_);
}

void Experts::backward(const float* dy, const float* x, const float* w1, const float* w2, float* dw1, float* dw2,
                       float* dx) {
  Scratch& ws = ws_;
  const int64_t rows = K_ * rmax_;
  const float* dyp = dy;
  if (!uniform_) {
    ws.dypad.grow(rows * d_);
    to_padded(dy, d_, ws.dypad.data());
    dyp = ws.dypad.data();
  }
  ws.dhpad.grow(rows * de_);
  float* dhp = ws.dhpad.data();

  // dh_k = dy_k · W2_kᵀ, then through the ReLU (h > 0)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = dyp + k * rmax_ * d_;
    b_[size_t(k)] = w2 + k * de_ * d_;
    c_[size_t(k)] = dhp + k * rmax_ * de_;
  }
  be_.grouped_gemm(false, true, K_, m_.data(), de_, d_, 1.0f, a_.data(), d_, b_.data(), d_, 0.0f,
                   c_.data(), de_);
  if (!uniform_) zero_padding(dhp, de_);
  be_.relu_backward_inplace(dhp, hp_.data(), rows * de_);  // dh = h > 0 ? dh : 0

  // dW2_k += h_kᵀ · dy_k  (reduction over the padded rows; empty experts skipped with M = 0)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)] > 0 ? de_ : 0;
    a_[size_t(k)] = hp_.data() + k * rmax_ * de_;
    b_[size_t(k)] = dyp + k * rmax_ * d_;
    c_[size_t(k)] = dw2 + k * de_ * d_;
  }
  be_.grouped_gemm(true, false, K_, m_.data(), d_, rmax_, 1.0f, a_.data(), de_, b_.data(), d_, 1.0f,
                   c_.data(), d_);

  // dW1_k += x_kᵀ · dh_k, x kept or given again by the caller
  const float* xp = x_kept_;
  if (!keep_x_) {
    if (!x) throw Error("MoE experts: backward needs the input rows (forward did not keep them)");
    xp = x;
    if (!uniform_) {  // dy's padded copy is dead now (dW2 done): reuse the xpad scratch
      ws.xpad.grow(rows * d_);
      to_padded(x, d_, ws.xpad.data());
      xp = ws.xpad.data();
    }
  }
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)] > 0 ? d_ : 0;
    a_[size_t(k)] = xp + k * rmax_ * d_;
    b_[size_t(k)] = dhp + k * rmax_ * de_;
    c_[size_t(k)] = dw1 + k * d_ * de_;
  }
  be_.grouped_gemm(true, false, K_, m_.data(), de_, rmax_, 1.0f, a_.data(), d_, b_.data(), de_, 1.0f,
                   c_.data(), de_);

  // dx_k = dh_k · W1_kᵀ, packed
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = dhp + k * rmax_ * de_;
    b_[size_t(k)] = w1 + k * d_ * de_;
    c_[size_t(k)] = dx + offsets_[size_t(k)] * d_;
  }
  be_.grouped_gemm(false, true, K_, m_.data(), d_, de_, 1.0f, a_.data(), de_, b_.data(), de_, 0.0f,
                   c_.data(), d_);
}

}  // namespace finemoe::moe
