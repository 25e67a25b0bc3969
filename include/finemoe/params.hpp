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
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "finemoe/memory.hpp"

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

  // Declare tensors, then finalize() once to allocate. fan_in: for init; decay:
  // defaults to rank >= 2.
  void add(const std::string& name, std::vector<int64_t> global_shape, ParamClass cls, int64_t fan_in = 0);
  void finalize();

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

  // Flat class buffers (what collectives and the optimizer walk).
  Buffer<float>& params(ParamClass c) { return p_[int(c)]; }
  Buffer<float>& grads(ParamClass c) { return g_[int(c)]; }
  Buffer<float>& moments_m(ParamClass c) { return m_[int(c)]; }
  Buffer<float>& moments_v(ParamClass c) { return v_[int(c)]; }
  const Buffer<float>& params(ParamClass c) const { return p_[int(c)]; }
  const Buffer<float>& grads(ParamClass c) const { return g_[int(c)]; }
  const Buffer<float>& moments_m(ParamClass c) const { return m_[int(c)]; }
  const Buffer<float>& moments_v(ParamClass c) const { return v_[int(c)]; }

  void zero_grads();
  int ep_size() const { return ep_size_; }
  int ep_rank() const { return ep_rank_; }
  // Bytes of params + grads + two moments held by this rank, per class.
  int64_t local_bytes(ParamClass c) const { return int64_t(p_[int(c)].size()) * 4 * 4; }

 private:
  const ParamInfo* find(const std::string& name) const;
  int ep_size_, ep_rank_;
  bool finalized_ = false;
  std::vector<ParamInfo> infos_;
  int64_t sizes_[kNumParamClasses] = {0, 0};
  Buffer<float> p_[kNumParamClasses], g_[kNumParamClasses], m_[kNumParamClasses], v_[kNumParamClasses];
  std::vector<BufferInfo> buffer_infos_;
  int64_t buffer_size_ = 0;
  Buffer<float> b_;
  const BufferInfo& buffer_info(const std::string& name) const;
};

}  // namespace finemoe
