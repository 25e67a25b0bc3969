// The decoder-only transformer: forward/backward as orchestration over the
// rank's Backend (finemoe/kernels.hpp), llm.c style. Every kernel, GEMM or
// elementwise loop, runs in the backend (the CPU one: src/backend/cpu); this
// file only sequences them over named buffers (and zeroes gradients).
//
// Block (pre-LN):  x_mid = x + proj(attn(qkv(ln1(x))))
//                  x_out = x_mid + ffn(ln2(x_mid))
// ffn = dense ReLU MLP (fc, proj; no biases) or MoELayer [+ LayerNorm moe.norm].
//
// Activations live in a few flat buffers, one slot per block, allocated once
// and grown only when B grows. Backward walks the blocks in reverse carrying a
// single residual-stream gradient `dres`: each branch's input LayerNorm
// backward accumulates into it, so the residual adds need no extra work.
#include <cstring>
#include <string>
#include <vector>

#include "finemoe/error.hpp"
#include "finemoe/memory.hpp"
#include "finemoe/model.hpp"
#include "finemoe/kernels.hpp"

namespace finemoe {

namespace {

// Parameter (or gradient) pointers of one block.
struct BlockTensors {
  float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb, *ln2w, *ln2b;
  float *fcw = nullptr, *fcprojw = nullptr;                                   // dense
  float *router = nullptr, *normw = nullptr, *normb = nullptr, *w1 = nullptr, *w2 = nullptr;  // moe
  float* router_bias = nullptr;  // token choice: selection bias buffer (params only)
};

}  // namespace

struct Transformer::Impl {
  Config cfg;
  ParamStore& store;
  Backend& be;  // runs every kernel; this file only orchestrates
  int64_t L, d, V, T, H, dff;
  bool moe, moe_norm;
  std::vector<std::unique_ptr<MoELayer>> moe_layers;

  std::vector<BlockTensors> bp, bg;  // params, grads per block
  float *wte, *wpe, *lnfw, *lnfb, *headw;
  float *g_wte, *g_wpe, *g_lnfw, *g_lnfb, *g_headw;

  // ---- activations (per block slot unless noted) ----
  int64_t B_alloc = 0;
  int64_t B_last = 0;
  bool have_backward_state = false;
  DeviceBuffer<int32_t> tokens{be}, targets{be};  // copies of the last forward's inputs
  DeviceBuffer<float> encoded{be};  // [BT,d]
  DeviceBuffer<float> ln1{be}, ln1_mean{be}, ln1_rstd{be};  // [L,BT,d], [L,BT]
  DeviceBuffer<float> qkv{be};  // [L,BT,3d]
  DeviceBuffer<float> att{be};  // [L,B,H,T,T]
  DeviceBuffer<float> atty{be};  // [L,BT,d]
  DeviceBuffer<float> xmid{be};  // [L,BT,d]  residual after attention
  DeviceBuffer<float> ln2{be}, ln2_mean{be}, ln2_rstd{be};  // [L,BT,d], [L,BT]
  DeviceBuffer<float> fch{be};  // dense: [L,BT,4d] ReLU output
  DeviceBuffer<float> moe_out{be}, nrm_mean{be}, nrm_rstd{be};  // moe + norm: [L,BT,d], [L,BT]
  DeviceBuffer<float> xout{be};  // [L,BT,d]  block output
  DeviceBuffer<float> lnf{be}, lnf_mean{be}, lnf_rstd{be};  // [BT,d], [BT]
  DeviceBuffer<float> logits{be}, probs{be}, losses{be};  // [BT,V] (logits reused as dlogits), [BT]
  DeviceBuffer<float> branch{be};  // [BT,d] branch output before the residual add
  // ---- backward scratch ----
  DeviceBuffer<float> dres{be}, dbr{be}, dln{be}, dqkv{be}, dpreatt{be}, dh1{be}, dmoe{be};
  // Host copy of one block's selection bias (update_selection_bias), E·G floats.
  std::vector<float> bias_host;

  Impl(const Config& c, ParamStore& s, Dispatcher& disp, Backend& b) : cfg(c), store(s), be(b) {
    L = cfg.model.n_blocks;
    d = cfg.model.d_model;
    V = cfg.model.vocab_size;
    T = cfg.model.seq_len;
    H = cfg.n_heads();
    dff = cfg.d_ff();
    moe = !cfg.dense();
    moe_norm = moe && cfg.moe.output_norm;
    if (H <= 0 || d % cfg.model.head_dim != 0)
      throw ConfigError("config key 'model.d_model': " + std::to_string(d) + " is not a multiple of model.head_dim");
    store.require_backend(be, "Transformer");

    auto P = [&](const std::string& n) { return store.param(n); };
    auto G = [&](const std::string& n) { return store.grad(n); };
    wte = P("wte"); wpe = P("wpe"); lnfw = P("ln_f.w"); lnfb = P("ln_f.b"); headw = P("head.w");
    g_wte = G("wte"); g_wpe = G("wpe"); g_lnfw = G("ln_f.w"); g_lnfb = G("ln_f.b"); g_headw = G("head.w");
    for (int l = 0; l < 2 * L; ++l) {
      const bool grad = l >= L;
      auto get = [&](const std::string& n) { return grad ? G(n) : P(n); };
      const std::string p = "blocks." + std::to_string(l % L) + ".";
      BlockTensors t{};
      t.ln1w = get(p + "ln1.w"); t.ln1b = get(p + "ln1.b");
      t.qkvw = get(p + "attn.qkv.w"); t.qkvb = get(p + "attn.qkv.b");
      t.projw = get(p + "attn.proj.w"); t.projb = get(p + "attn.proj.b");
      t.ln2w = get(p + "ln2.w"); t.ln2b = get(p + "ln2.b");
      if (moe) {
        t.router = get(p + "moe.router.w");
        t.w1 = get(p + "moe.experts.w1");
        t.w2 = get(p + "moe.experts.w2");
        if (moe_norm) { t.normw = get(p + "moe.norm.w"); t.normb = get(p + "moe.norm.b"); }
        if (!grad && store.has_buffer(p + "moe.router.bias")) t.router_bias = store.buffer(p + "moe.router.bias");
      } else {
        t.fcw = get(p + "ffn.fc.w");
        t.fcprojw = get(p + "ffn.proj.w");
      }
      (grad ? bg : bp).push_back(t);
    }

    if (moe) {
      const MoEShape sh = moe_shape(cfg, store.ep_size(), store.ep_rank());
      // One scratch for all L layers (what lives within one layer call).
      const std::shared_ptr<moe::Scratch> scratch = make_moe_scratch(be);
      for (int64_t l = 0; l < L; ++l) moe_layers.push_back(std::make_unique<MoELayer>(sh, disp, be, scratch));
      bias_host.resize(size_t(cfg.n_experts()));
    }
  }

  void ensure(int64_t B) {
    if (B <= 0) throw Error("Transformer: batch size must be positive, got " + std::to_string(B));
    if (B <= B_alloc) return;
    const int64_t N = B * T, Lz = L;
    tokens.resize(N); targets.resize(N);
    encoded.resize(N * d);
    ln1.resize(Lz * N * d); ln1_mean.resize(Lz * N); ln1_rstd.resize(Lz * N);
    qkv.resize(Lz * N * 3 * d);
    att.resize(Lz * B * H * T * T);
    atty.resize(Lz * N * d);
    xmid.resize(Lz * N * d);
    ln2.resize(Lz * N * d); ln2_mean.resize(Lz * N); ln2_rstd.resize(Lz * N);
    if (!moe) fch.resize(Lz * N * dff);
    if (moe_norm) { moe_out.resize(Lz * N * d); nrm_mean.resize(Lz * N); nrm_rstd.resize(Lz * N); }
    xout.resize(Lz * N * d);
    lnf.resize(N * d); lnf_mean.resize(N); lnf_rstd.resize(N);
    logits.resize(N * V); probs.resize(N * V); losses.resize(N);
    branch.resize(N * d);
    dres.resize(N * d); dbr.resize(N * d); dln.resize(N * d); dqkv.resize(N * 3 * d);
    dpreatt.resize(B * H * T * T);
    if (!moe) dh1.resize(N * dff);
    if (moe_norm) dmoe.resize(N * d);
    B_alloc = B;
  }

  MoEWeights moe_weights(int64_t l) const { return {bp[l].router, bp[l].w1, bp[l].w2, bp[l].router_bias}; }

  // keep = true: every block gets its own activation slot (for backward).
  // keep = false (evaluation): all blocks share slot 0, so evaluation needs
  // one block's activations, not L.
  double run_forward(const int32_t* tok, const int32_t* tgt, int64_t B, bool keep) {
    ensure(B);
    const int64_t N = B * T;
    for (int64_t i = 0; i < N; ++i) {
      if (tok[i] < 0 || tok[i] >= V || tgt[i] < 0 || tgt[i] >= V)
        throw DataError("Transformer: token id " + std::to_string(tok[i] < 0 || tok[i] >= V ? tok[i] : tgt[i]) +
                        " at position " + std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) +
                        ")");
    }
    be.copy_from_host(tokens.data(), tok, N * int64_t(sizeof(int32_t)));
    be.copy_from_host(targets.data(), tgt, N * int64_t(sizeof(int32_t)));

    be.embedding_forward(encoded.data(), tokens.data(), wte, wpe, B, T, d);
    const float* x = encoded.data();
    for (int64_t l = 0; l < L; ++l) {
      const int64_t s = keep ? l : 0;
      const BlockTensors& w = bp[l];
      float* l_ln1 = ln1.data() + s * N * d;
      float* l_qkv = qkv.data() + s * N * 3 * d;
      float* l_att = att.data() + s * B * H * T * T;
      float* l_atty = atty.data() + s * N * d;
      float* l_xmid = xmid.data() + s * N * d;
      float* l_ln2 = ln2.data() + s * N * d;
      float* l_xout = xout.data() + s * N * d;

      be.layernorm_forward(l_ln1, ln1_mean.data() + s * N, ln1_rstd.data() + s * N, x, w.ln1w, w.ln1b, N, d);
      be.linear_forward(l_qkv, l_ln1, w.qkvw, w.qkvb, N, d, 3 * d);
      be.attention_forward(l_atty, l_att, l_qkv, B, T, d, H);
      be.linear_forward(branch.data(), l_atty, w.projw, w.projb, N, d, d);
      be.residual_forward(l_xmid, x, branch.data(), N * d);

      be.layernorm_forward(l_ln2, ln2_mean.data() + s * N, ln2_rstd.data() + s * N, l_xmid, w.ln2w, w.ln2b, N, d);
      if (!moe) {
        float* l_fch = fch.data() + s * N * dff;
        // ReLU fused into the GEMM; backward needs only its output.
        be.linear_relu_forward(l_fch, l_ln2, w.fcw, nullptr, N, d, dff);
        be.linear_forward(branch.data(), l_fch, w.fcprojw, nullptr, N, dff, d);
      } else if (moe_norm) {
        float* l_moe = moe_out.data() + s * N * d;
        moe_layers[l]->forward(l_ln2, l_moe, N, moe_weights(l));
        be.layernorm_forward(branch.data(), nrm_mean.data() + s * N, nrm_rstd.data() + s * N, l_moe, w.normw,
                               w.normb, N, d);
      } else {
        moe_layers[l]->forward(l_ln2, branch.data(), N, moe_weights(l));
      }
      be.residual_forward(l_xout, l_xmid, branch.data(), N * d);
      x = l_xout;
    }
    be.layernorm_forward(lnf.data(), lnf_mean.data(), lnf_rstd.data(), x, lnfw, lnfb, N, d);
    be.linear_forward(logits.data(), lnf.data(), headw, nullptr, N, d, V);
    const double loss = be.crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V);
    B_last = B;
    have_backward_state = keep;
    return loss;
  }

  void run_backward(double loss_scale) {
    if (!have_backward_state) throw Error("Transformer::backward called without a preceding forward()");
    const int64_t B = B_last, N = B * T;
    // The logits are not needed any more: their buffer becomes dlogits.
    float* dlogits = logits.data();
    be.fill_zero(dlogits, N * V);
    be.crossentropy_backward(dlogits, probs.data(), targets.data(), float(loss_scale / double(N)), N, V);
    be.fill_zero(dln.data(), N * d);
    be.linear_backward(dln.data(), g_headw, nullptr, dlogits, lnf.data(), headw, N, d, V);
    be.fill_zero(dres.data(), N * d);
    be.layernorm_backward(dres.data(), g_lnfw, g_lnfb, dln.data(), xout.data() + (L - 1) * N * d, lnfw,
                            lnf_mean.data(), lnf_rstd.data(), N, d);

    for (int64_t l = L - 1; l >= 0; --l) {
      const BlockTensors& w = bp[l];
      const BlockTensors& g = bg[l];
      const float* x = l == 0 ? encoded.data() : xout.data() + (l - 1) * N * d;
      const float* l_ln1 = ln1.data() + l * N * d;
      const float* l_qkv = qkv.data() + l * N * 3 * d;
      const float* l_att = att.data() + l * B * H * T * T;
      const float* l_atty = atty.data() + l * N * d;
      const float* l_xmid = xmid.data() + l * N * d;
      const float* l_ln2 = ln2.data() + l * N * d;

      // FFN branch: dres = ∂L/∂x_out = ∂L/∂(branch output).
      be.fill_zero(dln.data(), N * d);
      if (!moe) {
        const float* l_fch = fch.data() + l * N * dff;
        be.fill_zero(dh1.data(), N * dff);
        be.linear_backward(dh1.data(), g.fcprojw, nullptr, dres.data(), l_fch, w.fcprojw, N, dff, d);
        be.relu_backward_inplace(dh1.data(), l_fch, N * dff);
        be.linear_backward(dln.data(), g.fcw, nullptr, dh1.data(), l_ln2, w.fcw, N, d, dff);
      } else {
        const MoEGrads mg{g.router, g.w1, g.w2};
        if (moe_norm) {
          be.fill_zero(dmoe.data(), N * d);
          be.layernorm_backward(dmoe.data(), g.normw, g.normb, dres.data(), moe_out.data() + l * N * d, w.normw,
                                  nrm_mean.data() + l * N, nrm_rstd.data() + l * N, N, d);
          moe_layers[l]->backward(dmoe.data(), dln.data(), moe_weights(l), mg, loss_scale);
        } else {
          moe_layers[l]->backward(dres.data(), dln.data(), moe_weights(l), mg, loss_scale);
        }
      }
      // dres becomes ∂L/∂x_mid (identity path + ln2 path).
      be.layernorm_backward(dres.data(), g.ln2w, g.ln2b, dln.data(), l_xmid, w.ln2w, ln2_mean.data() + l * N,
                              ln2_rstd.data() + l * N, N, d);

      // Attention branch.
      be.fill_zero(dbr.data(), N * d);
      be.linear_backward(dbr.data(), g.projw, g.projb, dres.data(), l_atty, w.projw, N, d, d);
      be.fill_zero(dqkv.data(), N * 3 * d);
      be.attention_backward(dqkv.data(), dpreatt.data(), dbr.data(), l_qkv, l_att, B, T, d, H);
      be.fill_zero(dln.data(), N * d);
      be.linear_backward(dln.data(), g.qkvw, g.qkvb, dqkv.data(), l_ln1, w.qkvw, N, d, 3 * d);
      // dres becomes ∂L/∂x (block input).
      be.layernorm_backward(dres.data(), g.ln1w, g.ln1b, dln.data(), x, w.ln1w, ln1_mean.data() + l * N,
                              ln1_rstd.data() + l * N, N, d);
    }
    be.embedding_backward(g_wte, g_wpe, dres.data(), tokens.data(), B, T, d);
  }
};

Transformer::Transformer(const Config& cfg, ParamStore& store, Dispatcher& dispatcher, Backend& be)
    : impl_(std::make_unique<Impl>(cfg, store, dispatcher, be)) {}
Transformer::~Transformer() = default;

double Transformer::forward(const int32_t* tokens, const int32_t* targets, int64_t B) {
  return impl_->run_forward(tokens, targets, B, true);
}

void Transformer::backward(double loss_scale) { impl_->run_backward(loss_scale); }

double Transformer::evaluate(const int32_t* tokens, const int32_t* targets, int64_t B) {
  return impl_->run_forward(tokens, targets, B, false);
}

void Transformer::token_losses(std::vector<float>& host) const {
  const DeviceBuffer<float>& l = impl_->losses;
  const int64_t n = impl_->B_last * impl_->T;
  host.resize(size_t(n));
  if (n) impl_->be.copy_to_host(host.data(), l.data(), n * int64_t(sizeof(float)));
}

double Transformer::aux_loss() const {
  double a = 0.0;
  for (const auto& m : impl_->moe_layers) a += m->aux_loss();
  return a;
}

std::vector<std::vector<int64_t>> Transformer::selection_counts() const {
  std::vector<std::vector<int64_t>> c;
  for (const auto& m : impl_->moe_layers) c.push_back(m->selection_counts());
  return c;
}

void Transformer::update_selection_bias(const std::vector<std::vector<int64_t>>& loads, double rate) {
  Impl& m = *impl_;
  if (!m.moe) return;
  if (loads.size() != size_t(m.L)) throw Error("Transformer::update_selection_bias: loads of " +
                                               std::to_string(loads.size()) + " blocks for " + std::to_string(m.L));
  for (int64_t l = 0; l < m.L; ++l) {
    float* bias = m.bp[size_t(l)].router_bias;
    if (!bias) continue;  // expert choice: balanced by construction, no bias
    if (int64_t(loads[size_t(l)].size()) != m.cfg.n_experts())
      throw Error("Transformer::update_selection_bias: block " + std::to_string(l) + " has " +
                  std::to_string(loads[size_t(l)].size()) + " loads for " + std::to_string(m.cfg.n_experts()) +
                  " experts");
    // The bias is in the backend's memory. It is E·G floats updated once per
    // step from loads that are host integers (summed over the ranks by host
    // MPI), so an explicit round trip (E·G floats down, E·G up) moves no
    // more than a kernel would (the loads up), and keeps the one host
    // definition of the update (moe.hpp) that the tests check.
    const int64_t n = m.cfg.n_experts();
    m.be.copy_to_host(m.bias_host.data(), bias, n * int64_t(sizeof(float)));
    finemoe::update_selection_bias(m.bias_host.data(), loads[size_t(l)].data(), n, rate);
    m.be.copy_from_host(bias, m.bias_host.data(), n * int64_t(sizeof(float)));
  }
}

std::vector<RoutingStats> Transformer::routing_stats() const {
  std::vector<RoutingStats> s;
  for (const auto& m : impl_->moe_layers) s.push_back(m->stats());
  return s;
}

}  // namespace finemoe
