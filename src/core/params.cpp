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
  if (find(name)) throw Error("ParamStore: duplicate tensor '" + name + "'");
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

void ParamStore::finalize() {
  for (int c = 0; c < kNumParamClasses; ++c) {
    p_[c].resize(sizes_[c]);
    g_[c].resize(sizes_[c]);
    m_[c].resize(sizes_[c]);
    v_[c].resize(sizes_[c]);
  }
  finalized_ = true;
}

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
