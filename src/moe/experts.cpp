// Experts forward/backward as grouped GEMMs (see experts.hpp for the padded
// layout and why it exists).
#include "experts.hpp"

#include <algorithm>
#include <cstring>

#include "finemoe/backend.hpp"

namespace finemoe::moe {

Experts::Experts(int64_t n_local, int64_t d_model, int64_t d_expert)
    : K_(n_local), d_(d_model), de_(d_expert), counts_(size_t(n_local)), offsets_(size_t(n_local)),
      a_(size_t(n_local)), b_(size_t(n_local)), c_(size_t(n_local)), m_(size_t(n_local)) {}

void Experts::to_padded(const float* packed, int64_t width, float* padded) const {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < K_; ++k) {
    float* dst = padded + k * rmax_ * width;
    const int64_t n = counts_[size_t(k)] * width;
    if (n) std::memcpy(dst, packed + offsets_[size_t(k)] * width, size_t(n) * sizeof(float));
    std::memset(dst + n, 0, size_t(rmax_ * width - n) * sizeof(float));
  }
}

void Experts::zero_padding(float* padded, int64_t width) const {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < K_; ++k) {
    const int64_t n = counts_[size_t(k)] * width;
    std::memset(padded + k * rmax_ * width + n, 0, size_t(rmax_ * width - n) * sizeof(float));
  }
}

void Experts::forward(const float* x, const std::vector<int64_t>& counts, const float* w1, const float* w2,
                      float* y) {
  int64_t off = 0;
  rmax_ = 0;
  for (int64_t k = 0; k < K_; ++k) {
    counts_[size_t(k)] = counts[size_t(k)];
    offsets_[size_t(k)] = off;
    off += counts[size_t(k)];
    rmax_ = std::max(rmax_, counts[size_t(k)]);
  }
  const size_t rows = size_t(K_ * rmax_);
  for (Buffer<float>* b : {&xp_, &dyp_}) if (b->size() < rows * size_t(d_)) b->resize(rows * size_t(d_));
  for (Buffer<float>* b : {&hp_, &dhp_}) if (b->size() < rows * size_t(de_)) b->resize(rows * size_t(de_));
  to_padded(x, d_, xp_.data());

  // h_k = relu(x_k · W1_k)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = xp_.data() + k * rmax_ * d_;
    b_[size_t(k)] = w1 + k * d_ * de_;
    c_[size_t(k)] = hp_.data() + k * rmax_ * de_;
  }
  backend::grouped_gemm(false, false, K_, m_.data(), de_, d_, 1.0f, a_.data(), d_, b_.data(), de_, 0.0f,
                        c_.data(), de_);
  zero_padding(hp_.data(), de_);
  float* h = hp_.data();
  const int64_t nh = int64_t(rows) * de_;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < nh; ++i) h[i] = h[i] > 0.0f ? h[i] : 0.0f;

  // y_k = h_k · W2_k, written straight into the packed output
  for (int64_t k = 0; k < K_; ++k) {
    a_[size_t(k)] = hp_.data() + k * rmax_ * de_;
    b_[size_t(k)] = w2 + k * de_ * d_;
    c_[size_t(k)] = y + offsets_[size_t(k)] * d_;
  }
  backend::grouped_gemm(false, false, K_, m_.data(), d_, de_, 1.0f, a_.data(), de_, b_.data(), d_, 0.0f,
                        c_.data(), d_);
}

void Experts::backward(const float* dy, const float* w1, const float* w2, float* dw1, float* dw2, float* dx) {
  to_padded(dy, d_, dyp_.data());

  // dh_k = dy_k · W2_kᵀ, then through the ReLU (h > 0)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = dyp_.data() + k * rmax_ * d_;
    b_[size_t(k)] = w2 + k * de_ * d_;
    c_[size_t(k)] = dhp_.data() + k * rmax_ * de_;
  }
  backend::grouped_gemm(false, true, K_, m_.data(), de_, d_, 1.0f, a_.data(), d_, b_.data(), d_, 0.0f,
                        c_.data(), de_);
  zero_padding(dhp_.data(), de_);
  {
    float* dh = dhp_.data();
    const float* h = hp_.data();
    const int64_t nh = K_ * rmax_ * de_;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < nh; ++i) dh[i] = h[i] > 0.0f ? dh[i] : 0.0f;
  }

  // dW2_k += h_kᵀ · dy_k  (reduction over the padded rows; empty experts skipped with M = 0)
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)] > 0 ? de_ : 0;
    a_[size_t(k)] = hp_.data() + k * rmax_ * de_;
    b_[size_t(k)] = dyp_.data() + k * rmax_ * d_;
    c_[size_t(k)] = dw2 + k * de_ * d_;
  }
  backend::grouped_gemm(true, false, K_, m_.data(), d_, rmax_, 1.0f, a_.data(), de_, b_.data(), d_, 1.0f,
                        c_.data(), d_);

  // dW1_k += x_kᵀ · dh_k
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)] > 0 ? d_ : 0;
    a_[size_t(k)] = xp_.data() + k * rmax_ * d_;
    b_[size_t(k)] = dhp_.data() + k * rmax_ * de_;
    c_[size_t(k)] = dw1 + k * d_ * de_;
  }
  backend::grouped_gemm(true, false, K_, m_.data(), de_, rmax_, 1.0f, a_.data(), d_, b_.data(), de_, 1.0f,
                        c_.data(), de_);

  // dx_k = dh_k · W1_kᵀ, packed
  for (int64_t k = 0; k < K_; ++k) {
    m_[size_t(k)] = counts_[size_t(k)];
    a_[size_t(k)] = dhp_.data() + k * rmax_ * de_;
    b_[size_t(k)] = w1 + k * d_ * de_;
    c_[size_t(k)] = dx + offsets_[size_t(k)] * d_;
  }
  backend::grouped_gemm(false, true, K_, m_.data(), d_, de_, 1.0f, a_.data(), de_, b_.data(), de_, 0.0f,
                        c_.data(), d_);
}

}  // namespace finemoe::moe
