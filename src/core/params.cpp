#include "finemoe/params.hpp"

#include "finemoe/error.hpp"

namespace finemoe {

int64_t ParamInfo::row_elems() const {
  int64_t n = 1;
  for (size_t i = 1; i < global_shape.size(); ++i) n *= global_shape[i];
  return n;
}

void ParamStore::add(const std::string& name, std::vector<int64_t> shape, ParamClass cls, int64_t fan_in) {
  if (finalized_) throw Error("ParamStore::add('" + name + "') after finalize()");
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
  if (finalized_) throw Error("ParamStore::add_buffer('" + name + "') after finalize()");
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

void ParamStore::finalize() {
  for (int c = 0; c < kNumParamClasses; ++c) {
    p_[c].resize(sizes_[c]);
    g_[c].resize(sizes_[c]);
    m_[c].resize(sizes_[c]);
    v_[c].resize(sizes_[c]);
  }
  b_.resize(size_t(buffer_size_));
  b_.zero();
  finalized_ = true;
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

float* ParamStore::buffer(const std::string& name) { return b_.data() + buffer_info(name).offset; }
const float* ParamStore::buffer(const std::string& name) const { return b_.data() + buffer_info(name).offset; }

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

float* ParamStore::param(const std::string& n) { const auto& i = info(n); return p_[int(i.cls)].data() + i.offset; }
float* ParamStore::grad(const std::string& n) { const auto& i = info(n); return g_[int(i.cls)].data() + i.offset; }
const float* ParamStore::param(const std::string& n) const { const auto& i = info(n); return p_[int(i.cls)].data() + i.offset; }
const float* ParamStore::grad(const std::string& n) const { const auto& i = info(n); return g_[int(i.cls)].data() + i.offset; }
float* ParamStore::adam_m(const std::string& n) { const auto& i = info(n); return m_[int(i.cls)].data() + i.offset; }
float* ParamStore::adam_v(const std::string& n) { const auto& i = info(n); return v_[int(i.cls)].data() + i.offset; }

void ParamStore::zero_grads() {
  for (auto& g : g_) g.zero();
}

}  // namespace finemoe
