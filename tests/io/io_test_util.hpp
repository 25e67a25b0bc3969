// Shared helpers of the io tests: a small ParamStore with every shape class
// the trainer uses, values that are a known function of the GLOBAL index (so
// any EP layout can be checked), and file utilities.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "finemoe/device.hpp"
#include "finemoe/params.hpp"

namespace iotest {

// Expert-class tensors have E·G = 8 rows, so EP 1, 2, 4 and 8 all divide.
// Two buffers (non-trainable state, whole on every rank), as the router's
// selection bias. Allocated in `be`'s memory. The helpers below index the
// store's pointers directly, so they need a backend with host memory (the
// CPU one); a store in other memory is filled and read through its
// backend's explicit copies (test_checkpoint.cpp, CheckpointMemory).
inline finemoe::ParamStore make_store(int ep_size, int ep_rank, int64_t big = 0,
                                      finemoe::Backend& be = finemoe::cpu_backend()) {
  finemoe::ParamStore s(ep_size, ep_rank);
  s.add("wte", {32, 16}, finemoe::ParamClass::replicated);
  s.add("blocks.0.ln1.w", {16}, finemoe::ParamClass::replicated);
  s.add("blocks.0.moe.w1", {8, 16, 8}, finemoe::ParamClass::expert);   // 3-D: [E·G, d, d_expert]
  s.add("blocks.0.moe.b1", {8, 8}, finemoe::ParamClass::expert);
  s.add("blocks.1.moe.w2", {8, 8, 16}, finemoe::ParamClass::expert);
  s.add("blocks.1/nested name", {3, 5}, finemoe::ParamClass::replicated);  // odd name: '/' and space
  if (big > 0) s.add("big", {big}, finemoe::ParamClass::replicated);
  s.add_buffer("blocks.0.moe.router.bias", {8});
  s.add_buffer("blocks.1/odd buffer", {2, 3});
  s.finalize(be);
  return s;
}

// Value of element `global_index` of tensor `t` (k = 0 params, 1 m, 2 v),
// shifted by `salt` (e.g. the step). Uses odd bit patterns so byte compare
// catches any conversion.
inline float expected(size_t t, int64_t global_index, int k, int64_t salt = 0) {
  uint64_t h = (uint64_t(t) * 1000003u + uint64_t(global_index) * 7919u + uint64_t(k) * 104729u +
                uint64_t(salt) * 15485863u) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  float f = float(int64_t(h % 2000001) - 1000000) * 1.2345e-6f;
  return k == 2 ? f * f : f;  // v >= 0 like a real second moment
}

inline float* buf_of(finemoe::ParamStore& s, const finemoe::ParamInfo& p, int k) {
  auto& b = k == 0 ? s.params(p.cls) : k == 1 ? s.moments_m(p.cls) : s.moments_v(p.cls);
  return b.data() + p.offset;
}

// Buffer `b`'s values: expected() of tensor index 100 + b, k = 3.
inline float* buffer_of(finemoe::ParamStore& s, size_t b) { return s.buffer(s.buffers()[b].name); }

// Fills this rank's part of every tensor (and every buffer) with expected();
// `garbage` fills with a value that must never reach the file (ranks that
// must not write; buffers count as replicated: rank 0 writes them).
inline void fill(finemoe::ParamStore& s, int64_t salt = 0, bool garbage_replicated = false,
                 bool garbage_expert = false) {
  for (size_t b = 0; b < s.buffers().size(); ++b)
    for (int64_t i = 0; i < s.buffers()[b].count; ++i)
      buffer_of(s, b)[i] = garbage_replicated ? -777.0f : expected(100 + b, i, 3, salt);
  for (size_t t = 0; t < s.params().size(); ++t) {
    const auto& p = s.params()[t];
    const bool garbage = p.cls == finemoe::ParamClass::expert ? garbage_expert : garbage_replicated;
    for (int k = 0; k < 3; ++k) {
      float* b = buf_of(s, p, k);
      for (int64_t i = 0; i < p.local_count; ++i)
        b[i] = garbage ? -777.0f : expected(t, p.row0 * p.row_elems() + i, k, salt);
    }
  }
}

// Number of elements of this rank's part that differ (bitwise) from expected()
// (buffers included unless `buffers` is false).
inline int64_t mismatches(finemoe::ParamStore& s, int64_t salt = 0, bool buffers = true) {
  int64_t bad = 0;
  for (size_t b = 0; buffers && b < s.buffers().size(); ++b)
    for (int64_t i = 0; i < s.buffers()[b].count; ++i) {
      const float e = expected(100 + b, i, 3, salt);
      if (std::memcmp(&e, &buffer_of(s, b)[i], sizeof e) != 0) ++bad;
    }
  for (size_t t = 0; t < s.params().size(); ++t) {
    const auto& p = s.params()[t];
    for (int k = 0; k < 3; ++k) {
      const float* b = buf_of(s, p, k);
      for (int64_t i = 0; i < p.local_count; ++i) {
        float e = expected(t, p.row0 * p.row_elems() + i, k, salt);
        if (std::memcmp(&e, &b[i], sizeof e) != 0) ++bad;
      }
    }
  }
  return bad;
}

inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}
inline void write_file(const std::string& p, const std::string& data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << data;
}
inline bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// A fresh directory under the build tree's working directory.
inline std::string fresh_dir(const std::string& name) {
  std::string d = "io_test_tmp/" + name + "_" + std::to_string(::getpid());
  std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
  if (std::system(cmd.c_str()) != 0) std::abort();
  return d;
}

// Captures what the process writes to fd 2 (HDF5 prints its stacks there).
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    saved_ = ::dup(2);
    std::FILE* f = std::tmpfile();
    fd_ = ::dup(::fileno(f));
    std::fclose(f);
    ::dup2(fd_, 2);
  }
  std::string finish() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    std::string out;
    ::lseek(fd_, 0, SEEK_SET);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd_, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    ::close(fd_);
    return out;
  }

 private:
  int saved_ = -1, fd_ = -1;
};

}  // namespace iotest
