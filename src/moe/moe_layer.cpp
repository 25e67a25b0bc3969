// MoELayer: route -> dispatch the assigned token rows (the dispatcher permutes
// and sends) -> experts -> combine back -> weight by router probability and
// scatter-add into the output; backward is the mirror image. The layer never
// asks which dispatcher it has: one rank or an all-to-all behave alike here.
// All buffers are grow-only, in the backend's memory, so after the first step
// the layer allocates nothing. Orchestration only: every loop
// over tokens, assignments or rows is a kernel of the rank's Backend
// (kernels.hpp, "MoE kernels"; the CPU's in src/backend/cpu/moe_kernels.cpp).
#include <cmath>
#include <string>

#include "experts.hpp"
#include "finemoe/error.hpp"
#include "finemoe/moe.hpp"
#include "finemoe/profile.hpp"
#include "router.hpp"
#include "workspace.hpp"

namespace finemoe {

std::shared_ptr<moe::Scratch> make_moe_scratch(Backend& be) { return std::make_shared<moe::Scratch>(be); }

namespace {


void require(bool ok, const std::string& key, const std::string& what) {
  if (!ok) throw ConfigError("MoE layer: config key '" + key + "' " + what);
}

void validate(const MoEShape& s) {
  require(s.d_model > 0, "model.d_model", "must be positive");
  require(s.E >= 1 && s.G >= 1 && s.n_experts == s.E * s.G, "moe.experts",
          "and moe.granularity must be >= 1 with n_experts = E*G");
  require(s.d_expert > 0, "moe.granularity", "gives a non-positive expert width");
  require(s.ep_size >= 1 && s.n_experts % s.ep_size == 0, "parallel.expert_parallel",
          "(" + std::to_string(s.ep_size) + ") must divide the number of experts E*G = " +
              std::to_string(s.n_experts));
  require(s.ep_rank >= 0 && s.ep_rank < s.ep_size, "parallel.expert_parallel", "rank out of range");
  if (s.routing == Routing::expert_choice) {
    require(s.group_size >= 1, "moe.group_size", "must be positive");
    require(s.capacity >= 1 && s.capacity <= s.group_size, "moe.group_size",
            "gives an expert-choice capacity " + std::to_string(s.capacity) + " outside [1, group_size]");
  } else {
    require(s.top_k >= 1 && s.top_k <= s.n_experts, "moe.top_k", "must be in [1, E*G]");
    require(s.capacity_factor > 0, "moe.capacity_factor", "must be positive");
  }
  require(std::isfinite(s.balance_loss) && s.balance_loss >= 0, "moe.balance_loss", "must be a non-negative number");
  require(std::isfinite(s.z_loss) && s.z_loss >= 0, "moe.z_loss", "must be a non-negative number");
}

}  // namespace

struct MoELayer::Impl {
  Impl(const MoEShape& s, Dispatcher& d, Backend& b, std::shared_ptr<moe::Scratch> ws)
      : shape(s), disp(d), be(b), scratch(ws ? std::move(ws) : make_moe_scratch(b)), routes(b),
        experts(b, *scratch, s.local_experts(), s.d_model, s.d_expert), x(b), y_send(b) {}

  MoEShape shape;
  Dispatcher& disp;
  Backend& be;  // runs every kernel; the layer only orchestrates
  std::shared_ptr<moe::Scratch> scratch;  // shared by the model's layers (workspace.hpp)
  moe::Routes routes;
  moe::Experts experts;
  RoutingStats stats;
  bool entropy_stale = true;  // stats.router_entropy is computed when stats() is read
  // Activations kept for backward (per layer), in the backend's memory.
  // Everything else is in the shared scratch.
  DeviceBuffer<float> x;       // [T, d] copy of the input (router backward; re-gather of the expert inputs)
  DeviceBuffer<float> y_send;  // [A, d] expert outputs in send layout (for dprob)
  std::vector<int64_t> recv_counts;  // host, like every count (kernels.hpp, MoE kernels, "Memory")

  int64_t recv_rows() const { return Dispatcher::total_rows(recv_counts); }
  void fill_stats();
};

void MoELayer::Impl::fill_stats() {
  const moe::Routes& r = routes;
  stats.tokens_per_expert.assign(r.counts.begin(), r.counts.end());
  stats.tokens = r.T;
  if (shape.routing == Routing::expert_choice) {
    const int64_t unserved = be.moe_unserved_tokens(r.tok_off.data(), r.T);
    stats.unserved_fraction = r.T ? double(unserved) / double(r.T) : 0.0;
  } else {
    stats.unserved_fraction = r.wanted ? double(r.dropped) / double(r.wanted) : 0.0;
  }
  entropy_stale = true;  // T·E·G logarithms: only computed when somebody reads stats()
  stats.mean_experts_per_token = r.T ? double(r.assignments()) / double(r.T) : 0.0;
  stats.balance_loss = r.balance;
  stats.z_loss = r.z;
  stats.selected_per_expert.assign(r.selected.begin(), r.selected.end());
}

MoELayer::MoELayer(const MoEShape& shape, Dispatcher& dispatcher, Backend& be, std::shared_ptr<moe::Scratch> scratch) {
  validate(shape);
  if (&dispatcher.backend() != &be) throw Error("MoE layer: the dispatcher runs on another backend than the layer");
  impl_ = std::make_unique<Impl>(shape, dispatcher, be, std::move(scratch));
}

MoELayer::~MoELayer() = default;

const RoutingStats& MoELayer::stats() const {
  Impl& m = *impl_;
  if (m.entropy_stale) {  // the probabilities of the last forward are still in m.routes
    m.stats.router_entropy = moe::router_entropy(m.be, m.routes, m.shape.n_experts);
    m.entropy_stale = false;
  }
  return m.stats;
}
const MoEShape& MoELayer::shape() const { return impl_->shape; }

void update_selection_bias(float* bias, const int64_t* load, int64_t n, double rate) {
  if (rate == 0.0 || n <= 0) return;
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) total += load[i];
  // sign(mean − load_i) = sign(total − n·load_i): exact in integers.
  const float step = float(rate);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t diff = total - n * load[i];
    if (diff > 0) bias[i] += step;
    else if (diff < 0) bias[i] -= step;
  }
}

double MoELayer::aux_loss() const {
  const moe::Routes& r = impl_->routes;
  return impl_->shape.balance_loss * r.balance + impl_->shape.z_loss * r.z;
}

const std::vector<int64_t>& MoELayer::selection_counts() const { return impl_->routes.selected; }

void MoELayer::forward(const float* x, float* out, int64_t T, const MoEWeights& w) {
  Impl& m = *impl_;
  const int64_t d = m.shape.d_model;
  if (T < 0) throw Error("MoE layer: negative token count");
  m.x.grow(T * d);
  if (T) m.be.copy(m.x.data(), x, T * d * int64_t(sizeof(float)));

  {
    FINEMOE_PROFILE("router");
    moe::route_forward(m.be, m.shape, x, w.router, w.selection_bias, T, m.routes);
  }
  const moe::Routes& r = m.routes;
  const int64_t A = r.assignments();

  // Permute + send: the experts' input rows, in the recv layout. When they
  // crossed ranks the experts keep them for backward (re-creating them would
  // cost a second exchange); otherwise backward re-gathers them from m.x.
  m.y_send.grow(A * d);
  const bool keep_inputs = !m.disp.rows_stay_on_rank();
  const float* xin = nullptr;
  {
    FINEMOE_PROFILE("dispatch");
    xin = m.disp.dispatch_tokens(m.be, x, r.tok.data(), r.counts, d, m.recv_counts);
  }
  float* yout = m.disp.output_rows(m.y_send.data(), m.recv_rows(), d);
  {
    FINEMOE_PROFILE("experts");
    m.experts.forward(xin, m.recv_counts, w.w1, w.w2, yout, keep_inputs);
  }
  {
    FINEMOE_PROFILE("dispatch");
    m.disp.combine_rows(m.be, yout, d, m.y_send.data());  // back to the send layout (y_send)
  }

  // Weighted scatter-add into out (overwritten), experts ascending per token.
  {
    FINEMOE_PROFILE("moe_combine");
    m.be.moe_combine(m.y_send.data(), r.weight.data(), r.tok_off.data(), r.by_tok.data(), T, d, out);
  }
  m.fill_stats();
}

void MoELayer::backward(const float* dout, float* dx, const MoEWeights& w, const MoEGrads& g, double aux_scale) {
  Impl& m = *impl_;
  moe::Scratch& ws = *m.scratch;
  const moe::Routes& r = m.routes;
  const int64_t d = m.shape.d_model, T = r.T, A = r.assignments();
  ws.dy_send.grow(A * d);
  ws.dprob.grow(A);

  // out_t = Σ_i p_i·y_i  =>  ∂L/∂p_i = dout_t·y_i and ∂L/∂y_i = p_i·dout_t.
  {
    FINEMOE_PROFILE("moe_dprob");
    m.be.moe_combine_backward(dout, m.y_send.data(), r.tok.data(), r.weight.data(), A, d, ws.dy_send.data(),
                              ws.dprob.data());
  }

  // The output gradients per assignment to the experts (same counts as the
  // forward, so the recv rows line up with the experts' saved h), the input
  // rows again unless the experts kept them, and the input gradients back.
  ws.gx_send.grow(A * d);
  const float* dyin = nullptr;
  const float* xin = nullptr;
  {
    FINEMOE_PROFILE("dispatch");
    dyin = m.disp.dispatch_rows(m.be, ws.dy_send.data(), r.counts, d, m.recv_counts);
    if (m.disp.rows_stay_on_rank()) xin = m.disp.dispatch_tokens(m.be, m.x.data(), r.tok.data(), r.counts, d, m.recv_counts);
  }
  float* gout = m.disp.output_rows(ws.gx_send.data(), m.recv_rows(), d);
  {
    FINEMOE_PROFILE("experts");
    m.experts.backward(dyin, xin, w.w1, w.w2, g.w1, g.w2, gout);
  }
  {
    FINEMOE_PROFILE("dispatch");
    m.disp.combine_rows(m.be, gout, d, ws.gx_send.data());
  }
  const float* gx = ws.gx_send.data();  // expert input gradients in the send layout

  // dx_t += Σ_i (expert input gradient of assignment i), experts ascending.
  {
    FINEMOE_PROFILE("moe_combine");
    m.be.moe_scatter_add(gx, r.tok_off.data(), r.by_tok.data(), T, d, dx);
  }

  ws.dlogits.grow(T * m.shape.n_experts);
  FINEMOE_PROFILE("router");
  moe::route_backward(m.be, m.shape, r, ws.dprob.data(), aux_scale, m.x.data(), w.router, ws.dlogits.data(), g.router,
                      dx);
}

}  // namespace finemoe
