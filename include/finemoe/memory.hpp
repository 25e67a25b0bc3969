// 64-byte aligned buffers. Misaligned GEMM operands cost 25-35 % on AVX-512/AMX,
// so every tensor buffer in finemoe comes from here.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace finemoe {

constexpr std::size_t kAlign = 64;

template <typename T>
struct AlignedFree {
  void operator()(T* p) const { std::free(p); }
};

// Owning, zero-initialised, 64-byte aligned array of trivially copyable T.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  void resize(std::size_t n) {
    if (n == n_) { return; }
    std::size_t bytes = ((n * sizeof(T) + kAlign - 1) / kAlign) * kAlign;
    T* p = nullptr;
    if (bytes > 0) {
      p = static_cast<T*>(std::aligned_alloc(kAlign, bytes));
      if (!p) throw std::bad_alloc();
      std::memset(p, 0, bytes);
    }
    ptr_.reset(p);
    n_ = n;
  }
  void zero() { if (n_) std::memset(ptr_.get(), 0, n_ * sizeof(T)); }
  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return ptr_.get()[i]; }
  const T& operator[](std::size_t i) const { return ptr_.get()[i]; }
  T* begin() { return data(); }
  T* end() { return data() + n_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + n_; }

 private:
  std::unique_ptr<T, AlignedFree<T>> ptr_;
  std::size_t n_ = 0;
};

}  // namespace finemoe
