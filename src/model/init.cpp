// Parameter declaration and initialisation (SCIENCE.md, "Model used in the paper").
#include <cmath>
#include <string>

#include "finemoe/error.hpp"
#include "finemoe/model.hpp"
#include "finemoe/rng.hpp"

namespace finemoe {

namespace {

uint64_t name_hash(const std::string& s) {  // FNV-1a 64: stable across builds and platforms
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

void declare_parameters(const Config& cfg, ParamStore& store) {
  const int64_t d = cfg.model.d_model, V = cfg.model.vocab_size, T = cfg.model.seq_len;
  const auto R = ParamClass::replicated;
  // Embeddings: fan_in 1 (the "input" is a one-hot row), as in the paper's
  // codebase, so σ = sqrt(init_scale).
  store.add("wte", {V, d}, R, 1);
  store.add("wpe", {T, d}, R, 1);
  for (int64_t i = 0; i < cfg.model.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    store.add(p + "ln1.w", {d}, R);
    store.add(p + "ln1.b", {d}, R);
    store.add(p + "attn.qkv.w", {d, 3 * d}, R, d);
    store.add(p + "attn.qkv.b", {3 * d}, R);
    store.add(p + "attn.proj.w", {d, d}, R, d);
    store.add(p + "attn.proj.b", {d}, R);
    store.add(p + "ln2.w", {d}, R);
    store.add(p + "ln2.b", {d}, R);
    if (cfg.dense()) {
      store.add(p + "ffn.fc.w", {d, 4 * d}, R, d);
      store.add(p + "ffn.proj.w", {4 * d, d}, R, 4 * d);
    } else {
      const int64_t EG = cfg.n_experts(), de = cfg.d_expert();
      store.add(p + "moe.router.w", {d, EG}, R, d);
      // Token choice's selection bias (DeepSeek-V3; moe.bias_update_rate):
      // not trained, so a buffer; zero, i.e. no bias, until the trainer
      // updates it. Declared whatever the rate, so checkpoints of one
      // routing always hold the same tensors.
      if (cfg.routing() == Routing::token_choice) store.add_buffer(p + "moe.router.bias", {EG});
      if (cfg.moe.output_norm) {
        store.add(p + "moe.norm.w", {d}, R);
        store.add(p + "moe.norm.b", {d}, R);
      }
      store.add(p + "moe.experts.w1", {EG, d, de}, ParamClass::expert, d);
      // fan_in 4·d rather than d_expert: a fine expert's second matrix then
      // starts at the dense FFN's scale whatever G is (SCIENCE.md).
      store.add(p + "moe.experts.w2", {EG, de, d}, ParamClass::expert, 4 * d);
    }
  }
  store.add("ln_f.w", {d}, R);
  store.add("ln_f.b", {d}, R);
  store.add("head.w", {d, V}, R, d);
}

void init_parameters(const Config& cfg, ParamStore& store, uint64_t seed, Backend& be) {
  store.require_backend(be, "init_parameters");
  const Rng root(seed, 0);
  for (const ParamInfo& p : store.params()) {
    float* w = store.param(p.name);
    if (p.global_shape.size() == 1) {
      // LayerNorm weights 1, every bias and LayerNorm shift 0 (the backend's
      // fill: `w` is in its memory).
      be.fill(w, p.local_count, ends_with(p.name, ".w") ? 1.f : 0.f);
      continue;
    }
    if (p.fan_in <= 0) throw Error("init_parameters: tensor '" + p.name + "' has no fan_in");
    const double sigma = std::sqrt(cfg.model.init_scale / double(p.fan_in));
    const Rng tensor_rng = root.split(name_hash(p.name));
    // One stream per GLOBAL dim-0 row (the backend's kernel): expert rows
    // draw the same numbers whichever rank holds them, and rows can be filled
    // in parallel.
    be.init_truncated_normal(w, p.local_rows, p.row_elems(), p.row0, sigma, tensor_rng.seed(), tensor_rng.stream());
  }
}

}  // namespace finemoe
