// Parameters, gradients and AdamW moments in a few flat buffers, one per
// ownership class, with named views into them (llm.c's
// malloc_and_point_parameters). Gradient sync is then one collective per class,
// the optimizer one loop per class, and a checkpoint a walk over the names.
//
//   replicated: every rank holds the whole tensor (attention, norms, router,
//               embeddings, head); averaged over ALL ranks.
//   expert:     dim 0 is the global expert id (E·G rows); an EP rank holds rows
//               [row0, row0 + local_rows); averaged over the expert's DP group.
//
// Buffers (PyTorch's register_buffer) are the model's non-trainable state:
// no gradient, no AdamW moments, whole on every rank, and kept identical on
// every rank by whoever updates them (deterministically, from globally summed
// inputs). Checkpoints save them (/buffers) so that resume stays bit-exact.
// Example: the router's selection bias (moe.hpp). Zero after finalize().
//
// Memory: finalize(be) allocates every class buffer, the moments and the
// buffers in backend `be`'s memory (DeviceBuffer; device memory for a device
// backend, host memory for the CPU one), and the store remembers `be`. Every
// pointer it hands out (param(), grad(), params(c).data(), buffer(), ...) is
// then a pointer of that backend: kernels of `be` work on it, and the host
// reads or writes the values only through be.copy_to_host / copy_from_host
// (checkpoints, tests) or be's kernels (fill, fill_zero). Code that runs
// kernels on the store checks it was given the store's backend
// (require_backend). On the CPU backend the memory is the host's, so tests
// may still index the pointers directly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "finemoe/kernels.hpp"

namespace finemoe {

enum class ParamClass { replicated = 0, expert = 1 };
constexpr int kNumParamClasses = 2;

struct ParamInfo {
  std::string name;
  std::vector<int64_t> global_shape;  // full tensor shape (as stored in checkpoints)
  ParamClass cls = ParamClass::replicated;
  int64_t row0 = 0;        // expert class: first global row held locally
  int64_t local_rows = 0;  // expert class: rows held locally (global_shape[0] for replicated)
  int64_t offset = 0;      // element offset in the class buffer
  int64_t local_count = 0; // elements held locally
  bool decay = false;      // AdamW weight decay applies (matrices)
  int64_t fan_in = 0;      // for initialisation
  int64_t row_elems() const;  // elements per dim-0 row
};

struct BufferInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // element offset in the buffer store
  int64_t count = 0;   // elements
};

class ParamStore {
 public:
  // Expert-class tensors are split over `ep_size` ranks; this rank is `ep_rank`.
  ParamStore(int ep_size = 1, int ep_rank = 0) : ep_size_(ep_size), ep_rank_(ep_rank) {}

  // Declare tensors, then finalize(be) once to allocate them, zero-filled, in
  // backend be's memory. fan_in: for init; decay: defaults to rank >= 2.
  void add(const std::string& name, std::vector<int64_t> global_shape, ParamClass cls, int64_t fan_in = 0);
  void finalize(Backend& be);
  bool finalized() const { return mem_ != nullptr; }
  // The backend whose memory holds the tensors (Error before finalize()).
  Backend& backend() const;
  // Error naming `who` unless `be` is backend(): a kernel of one backend must
  // not run on another's memory.
  void require_backend(const Backend& be, const std::string& who) const;

  // Declares a non-trainable buffer (before finalize()).
  void add_buffer(const std::string& name, std::vector<int64_t> shape);
  const std::vector<BufferInfo>& buffers() const { return buffer_infos_; }
  bool has_buffer(const std::string& name) const;
  float* buffer(const std::string& name);
  const float* buffer(const std::string& name) const;

  const std::vector<ParamInfo>& params() const { return infos_; }
  const ParamInfo& info(const std::string& name) const;
  bool has(const std::string& name) const;

  float* param(const std::string& name);
  float* grad(const std::string& name);
  const float* param(const std::string& name) const;
  const float* grad(const std::string& name) const;
  float* adam_m(const std::string& name);
  float* adam_v(const std::string& name);

  // Flat class buffers (what collectives and the optimizer walk), in
  // backend()'s memory. Error before finalize().
  DeviceBuffer<float>& params(ParamClass c) { return mem().p[int(c)]; }
  DeviceBuffer<float>& grads(ParamClass c) { return mem().g[int(c)]; }
  DeviceBuffer<float>& moments_m(ParamClass c) { return mem().m[int(c)]; }
  DeviceBuffer<float>& moments_v(ParamClass c) { return mem().v[int(c)]; }
  const DeviceBuffer<float>& params(ParamClass c) const { return mem().p[int(c)]; }
  const DeviceBuffer<float>& grads(ParamClass c) const { return mem().g[int(c)]; }
  const DeviceBuffer<float>& moments_m(ParamClass c) const { return mem().m[int(c)]; }
  const DeviceBuffer<float>& moments_v(ParamClass c) const { return mem().v[int(c)]; }

  // Gradients = 0 (the backend's fill_zero).
  void zero_grads();
  int ep_size() const { return ep_size_; }
  int ep_rank() const { return ep_rank_; }
  // Bytes of params + grads + two moments held by this rank, per class.
  int64_t local_bytes(ParamClass c) const { return sizes_[int(c)] * 4 * 4; }

 private:
  // What finalize() allocates: per class the parameters, gradients and two
  // moments, and one array for all buffers, each in the backend's memory.
  struct Memory {
    explicit Memory(Backend& be)
        : p{DeviceBuffer<float>(be), DeviceBuffer<float>(be)},
          g{DeviceBuffer<float>(be), DeviceBuffer<float>(be)},
          m{DeviceBuffer<float>(be), DeviceBuffer<float>(be)},
          v{DeviceBuffer<float>(be), DeviceBuffer<float>(be)},
          b(be) {}
    DeviceBuffer<float> p[kNumParamClasses], g[kNumParamClasses], m[kNumParamClasses], v[kNumParamClasses];
    DeviceBuffer<float> b;
  };
  static_assert(kNumParamClasses == 2, "Memory's initialisers list one buffer per class");
  Memory& mem();
  const Memory& mem() const;
  const ParamInfo* find(const std::string& name) const;
  int ep_size_, ep_rank_;
  std::vector<ParamInfo> infos_;
  int64_t sizes_[kNumParamClasses] = {0, 0};
  std::vector<BufferInfo> buffer_infos_;
  int64_t buffer_size_ = 0;
  std::unique_ptr<Memory> mem_;  // null until finalize()
  const BufferInfo& buffer_info(const std::string& name) const;
};

}  // namespace finemoe
