#include "finemoe/params.hpp"

#include "finemoe/error.hpp"

namespace finemoe {

namespace {

// Tensor i's local elements in one array per class (params, grads or a moment).
template <typename ClassBuffers>
auto tensor_in(ClassBuffers& bufs, const ParamInfo& i) {
  return bufs[int(i.cls)].data() + i.offset;
}

}  // namespace

int64_t ParamInfo::row_elems() const {
  int64_t n = 1;
  for (size_t i = 1; i < global_shape.size(); ++i) n *= global_shape[i];
  return n;
}

void ParamStore::add(const std::string& name, std::vector<int64_t> shape, ParamClass cls, int64_t fan_in) {
  if (finalized()) throw Error("ParamStore::add('" + name + "') after finalize()");
  if (find(name) || has_buffer(name)) throw Error("ParamStore: duplicate tensor '" + name + "'");
  ParamInfo p;
  p.name = name;
  p.global_shape = std::move(shape);
  p.cls = cls;
  p.fan_in = fan_in;
  p.decay = p.global_shape.size() >= 2;
  const int64_t rows = p.global_shape.at(0);
  if (cls == ParamClass::expert) {
    if (rows % ep_size_ != 0)
      throw Error("ParamStore: expert tensor '" + name + "' has " + std::to_string(rows) +
                  " experts, not divisible by EP = " + std::to_string(ep_size_));
    p.local_rows = rows / ep_size_;
    p.row0 = p.local_rows * ep_rank_;
  } else {
    p.local_rows = rows;
    p.row0 = 0;
  }
  p.local_count = p.local_rows * p.row_elems();
  // Keep every tensor 64-byte aligned inside its class buffer.
  p.offset = sizes_[int(cls)];
  sizes_[int(cls)] += (p.local_count + 15) / 16 * 16;
  infos_.push_back(std::move(p));
}

void ParamStore::add_buffer(const std::string& name, std::vector<int64_t> shape) {
  if (finalized()) throw Error("ParamStore::add_buffer('" + name + "') after finalize()");
  if (find(name) || has_buffer(name)) throw Error("ParamStore: duplicate tensor '" + name + "'");
  BufferInfo b;
  b.name = name;
  b.count = 1;
  for (int64_t n : shape) b.count *= n;
  b.shape = std::move(shape);
  b.offset = buffer_size_;
  buffer_size_ += (b.count + 15) / 16 * 16;  // 64-byte aligned, as the parameters
  buffer_infos_.push_back(std::move(b));
}

void ParamStore::finalize(Backend& be) {
  if (finalized()) throw Error("ParamStore::finalize() called twice");
  // DeviceBuffer memory comes zero-filled from the backend: parameters,
  // gradients, moments and buffers all start at zero.
  auto m = std::make_unique<Memory>(be);
  for (int c = 0; c < kNumParamClasses; ++c) {
    m->p[c].resize(sizes_[c]);
    m->g[c].resize(sizes_[c]);
    m->m[c].resize(sizes_[c]);
    m->v[c].resize(sizes_[c]);
  }
  m->b.resize(buffer_size_);
  mem_ = std::move(m);
}

ParamStore::Memory& ParamStore::mem() {
  if (!mem_) throw Error("ParamStore: tensors used before finalize()");
  return *mem_;
}
const ParamStore::Memory& ParamStore::mem() const {
  if (!mem_) throw Error("ParamStore: tensors used before finalize()");
  return *mem_;
}

Backend& ParamStore::backend() const { return mem().b.backend(); }

void ParamStore::require_backend(const Backend& be, const std::string& who) const {
  const Backend& mine = backend();
  if (&be != &mine)
    throw Error(who + ": the parameter store's tensors are in the memory of backend '" + mine.describe() +
                "', not of the backend it was given ('" + be.describe() + "')");
}

bool ParamStore::has_buffer(const std::string& name) const {
  for (const auto& b : buffer_infos_)
    if (b.name == name) return true;
  return false;
}

const BufferInfo& ParamStore::buffer_info(const std::string& name) const {
  for (const auto& b : buffer_infos_)
    if (b.name == name) return b;
  throw Error("ParamStore: no buffer named '" + name + "'");
}

float* ParamStore::buffer(const std::string& name) { return mem().b.data() + buffer_info(name).offset; }
const float* ParamStore::buffer(const std::string& name) const { return mem().b.data() + buffer_info(name).offset; }

const ParamInfo* ParamStore::find(const std::string& name) const {
  for (const auto& p : infos_)
    if (p.name == name) return &p;
  return nullptr;
}

bool ParamStore::has(const std::string& name) const { return find(name) != nullptr; }

const ParamInfo& ParamStore::info(const std::string& name) const {
  const ParamInfo* p = find(name);
  if (!p) throw Error("ParamStore: no tensor named '" + name + "'");
  return *p;
}

float* ParamStore::param(const std::string& n) { return tensor_in(mem().p, info(n)); }
float* ParamStore::grad(const std::string& n) { return tensor_in(mem().g, info(n)); }
const float* ParamStore::param(const std::string& n) const { return tensor_in(mem().p, info(n)); }
const float* ParamStore::grad(const std::string& n) const { return tensor_in(mem().g, info(n)); }
float* ParamStore::adam_m(const std::string& n) { return tensor_in(mem().m, info(n)); }
float* ParamStore::adam_v(const std::string& n) { return tensor_in(mem().v, info(n)); }

void ParamStore::zero_grads() {
  for (auto& g : mem().g) g.backend().fill_zero(g.data(), g.size());
}

}  // namespace finemoe
