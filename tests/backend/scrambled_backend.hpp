// A test backend whose memory the host cannot read directly: proof that code
// reaches a store's values only through Backend::copy_to_host /
// copy_from_host (and the fills), as a device backend requires.
//
// Its "device memory" is host memory holding every byte XOR kKey, so a direct
// host read of it returns scrambled values, and a direct host write is
// unscrambled garbage on the next explicit copy. allocate / deallocate and the
// copies are counted, and a copy checks that its device side lies inside one
// live allocation of this backend and its host side outside all of them (a
// device pointer passed as the host one fails the test). The kernels are not
// implemented: calling one throws std::logic_error naming it. Header only.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <stdexcept>
#include <string>

#include "finemoe/kernels.hpp"

namespace finemoe::testing {

class ScrambledBackend final : public Backend {
 public:
  static constexpr unsigned char kKey = 0x5A;

  struct Counts {
    int64_t allocate = 0, deallocate = 0;
    int64_t copy_to_host = 0, copy_to_host_bytes = 0;
    int64_t copy_from_host = 0, copy_from_host_bytes = 0;
    int64_t copy = 0, fill_zero = 0, fill = 0;
  };
  Counts counts;

  Device device() const override { return Device::cpu; }
  std::string describe() const override { return "scrambled test memory (no kernels)"; }

  // ---- memory ----
  void* allocate(int64_t bytes) override {
    const size_t rounded = ((size_t(bytes) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!p) throw std::bad_alloc();
    std::memset(p, kKey, rounded);  // zero, scrambled
    live_[static_cast<const unsigned char*>(p)] = bytes;
    ++counts.allocate;
    return p;
  }
  void deallocate(void* p) override {
    if (live_.erase(static_cast<const unsigned char*>(p)) != 1)
      throw std::logic_error("ScrambledBackend: deallocate of a pointer it did not allocate");
    ++counts.deallocate;
    std::free(p);
  }
  void fill_zero(float* x, int64_t n) override {
    check_device(x, n * 4, "fill_zero");
    ++counts.fill_zero;
    std::memset(x, kKey, size_t(n) * 4);
  }
  void fill(float* x, int64_t n, float value) override {
    check_device(x, n * 4, "fill");
    ++counts.fill;
    for (int64_t i = 0; i < n; ++i) scramble(x + i, &value, 4);
  }
  void copy_from_host(void* dst, const void* host_src, int64_t bytes) override {
    check_device(dst, bytes, "copy_from_host");
    check_host(host_src, bytes, "copy_from_host");
    ++counts.copy_from_host;
    counts.copy_from_host_bytes += bytes;
    scramble(dst, host_src, bytes);
  }
  void copy_to_host(void* host_dst, const void* src, int64_t bytes) override {
    check_device(src, bytes, "copy_to_host");
    check_host(host_dst, bytes, "copy_to_host");
    ++counts.copy_to_host;
    counts.copy_to_host_bytes += bytes;
    scramble(host_dst, src, bytes);
  }
  void copy(void* dst, const void* src, int64_t bytes) override {
    check_device(dst, bytes, "copy");
    check_device(src, bytes, "copy");
    ++counts.copy;
    if (bytes > 0) std::memmove(dst, src, size_t(bytes));
  }

  // Live allocations: first byte -> size requested.
  const std::map<const unsigned char*, int64_t>& live() const { return live_; }
  // [p, p + bytes) lies inside one live allocation.
  bool owns(const void* p, int64_t bytes) const {
    const auto* b = static_cast<const unsigned char*>(p);
    auto it = live_.upper_bound(b);
    if (it == live_.begin()) return false;
    --it;
    return b >= it->first && b + bytes <= it->first + it->second;
  }

  // ---- kernels: not implemented ----
  void gemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
            int64_t, backend::Epilogue) override {
    unsupported("gemm");
  }
  void gemm_fp32(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                 float*, int64_t) override {
    unsupported("gemm_fp32");
  }
  void grouped_gemm(bool, bool, int64_t, const int64_t*, int64_t, int64_t, float, const float* const*, int64_t,
                    const float* const*, int64_t, float, float* const*, int64_t, backend::Epilogue) override {
    unsupported("grouped_gemm");
  }
  void embedding_forward(float*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t) override {
    unsupported("embedding_forward");
  }
  void embedding_backward(float*, float*, const float*, const int32_t*, int64_t, int64_t, int64_t) override {
    unsupported("embedding_backward");
  }
  void layernorm_forward(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t) override {
    unsupported("layernorm_forward");
  }
  void layernorm_backward(float*, float*, float*, const float*, const float*, const float*, const float*, const float*,
                          int64_t, int64_t) override {
    unsupported("layernorm_backward");
  }
  void linear_forward(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t) override {
    unsupported("linear_forward");
  }
  void linear_relu_forward(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t) override {
    unsupported("linear_relu_forward");
  }
  void linear_backward(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                       int64_t) override {
    unsupported("linear_backward");
  }
  void attention_forward(float*, float*, const float*, int64_t, int64_t, int64_t, int64_t) override {
    unsupported("attention_forward");
  }
  void attention_backward(float*, float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                          int64_t) override {
    unsupported("attention_backward");
  }
  void relu_forward(float*, const float*, int64_t) override { unsupported("relu_forward"); }
  void relu_backward(float*, const float*, const float*, int64_t) override { unsupported("relu_backward"); }
  void relu_backward_inplace(float*, const float*, int64_t) override { unsupported("relu_backward_inplace"); }
  void residual_forward(float*, const float*, const float*, int64_t) override { unsupported("residual_forward"); }
  double crossentropy_forward(float*, float*, const float*, const int32_t*, int64_t, int64_t) override {
    unsupported("crossentropy_forward");
  }
  void crossentropy_backward(float*, const float*, const int32_t*, float, int64_t, int64_t) override {
    unsupported("crossentropy_backward");
  }
  void init_truncated_normal(float*, int64_t, int64_t, int64_t, double, uint64_t, uint64_t) override {
    unsupported("init_truncated_normal");
  }
  void moe_softmax(const float*, float*, float*, int64_t, int64_t) override { unsupported("moe_softmax"); }
  void moe_select_expert_choice(const float*, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*, float*) override {
    unsupported("moe_select_expert_choice");
  }
  void moe_topk(const float*, const float*, int64_t, int64_t, int64_t, int64_t*) override { unsupported("moe_topk"); }
  int64_t moe_capacity(int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*,
                       int64_t*) override {
    unsupported("moe_capacity");
  }
  void moe_expert_major(const int64_t*, const int64_t*, const float*, int64_t, int64_t, int64_t, int64_t*, int64_t*,
                        float*) override {
    unsupported("moe_expert_major");
  }
  void moe_token_view(const int64_t*, int64_t, int64_t, int64_t*, int64_t*) override { unsupported("moe_token_view"); }
  int64_t moe_unserved_tokens(const int64_t*, int64_t) override { unsupported("moe_unserved_tokens"); }
  void moe_aux_statistics(const float*, const int64_t*, const float*, int64_t, int64_t, int64_t, double*, double*,
                          double*, double*) override {
    unsupported("moe_aux_statistics");
  }
  double moe_router_entropy(const float*, int64_t, int64_t, double*) override { unsupported("moe_router_entropy"); }
  void moe_router_backward(const float*, const float*, const double*, const int64_t*, const int64_t*, const int64_t*,
                           const float*, const float*, int64_t, int64_t, int64_t, bool, double, double,
                           float*) override {
    unsupported("moe_router_backward");
  }
  void moe_gather_rows(const float*, const int64_t*, int64_t, int64_t, float*) override {
    unsupported("moe_gather_rows");
  }
  void moe_combine(const float*, const float*, const int64_t*, const int64_t*, int64_t, int64_t, float*) override {
    unsupported("moe_combine");
  }
  void moe_combine_backward(const float*, const float*, const int64_t*, const float*, int64_t, int64_t, float*,
                            float*) override {
    unsupported("moe_combine_backward");
  }
  void moe_scatter_add(const float*, const int64_t*, const int64_t*, int64_t, int64_t, float*) override {
    unsupported("moe_scatter_add");
  }
  void moe_to_padded(const float*, const int64_t*, const int64_t*, int64_t, int64_t, int64_t, float*) override {
    unsupported("moe_to_padded");
  }
  void moe_zero_padding(float*, const int64_t*, int64_t, int64_t, int64_t) override { unsupported("moe_zero_padding"); }
  void adamw_step(float*, float*, float*, float*, int64_t, const AdamWArgs&) override { unsupported("adamw_step"); }
  void scale(float*, int64_t, float) override { unsupported("scale"); }
  double sum_squares(const float*, int64_t) override { unsupported("sum_squares"); }
  int64_t find_nonfinite(const float*, int64_t) override { unsupported("find_nonfinite"); }

 private:
  [[noreturn]] static void unsupported(const char* kernel) {
    throw std::logic_error(std::string("ScrambledBackend: kernel ") + kernel + " is not implemented (memory only)");
  }
  static void scramble(void* dst, const void* src, int64_t bytes) {
    for (int64_t i = 0; i < bytes; ++i)
      static_cast<unsigned char*>(dst)[i] =
          static_cast<unsigned char>(static_cast<const unsigned char*>(src)[i] ^ kKey);
  }
  void check_device(const void* p, int64_t bytes, const char* what) const {
    if (bytes > 0 && !owns(p, bytes))
      throw std::logic_error(std::string("ScrambledBackend::") + what + ": device range not in a live allocation");
  }
  void check_host(const void* p, int64_t bytes, const char* what) const {
    if (bytes <= 0) return;
    const auto* b = static_cast<const unsigned char*>(p);
    for (const auto& [q, n] : live_)
      if (b < q + n && q < b + bytes)
        throw std::logic_error(std::string("ScrambledBackend::") + what + ": host range overlaps device memory");
  }
  std::map<const unsigned char*, int64_t> live_;
};

}  // namespace finemoe::testing
