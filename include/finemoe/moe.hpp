// The fine-grained MoE layer, split as in Megatron-Core's transformer/moe/:
//
//   Router      x -> logits (fp32) -> softmax probs -> assignments (which token
//               goes to which expert with which weight): expert choice or
//               token choice.
//   Dispatcher  permutes the assigned token rows and moves them to the rank
//               owning each expert, and back. LocalDispatcher (one rank) moves
//               nothing; the MPI all-to-all dispatcher (src/parallel)
//               implements the same interface, and the layer cannot tell them apart.
//   Experts     E·G ReLU MLPs d -> d_expert -> d as ONE grouped GEMM per matrix.
//   MoELayer    wires them together: forward, backward, telemetry.
//
// Load balancing (all optional, see "Auxiliary losses" below): the
// Switch/GShard balance loss and the ST-MoE router z-loss are added to the
// training objective by the layer's backward; the DeepSeek-V3 selection bias
// is an input of the forward (MoEWeights::selection_bias) that the trainer
// updates between steps (update_selection_bias).
//
// Weight layout (row-major): router [d, E·G]; experts w1 [K, d, d_expert],
// w2 [K, d_expert, d] where K = local experts (E·G / EP) of this EP rank, global
// ids [ep_rank·K, (ep_rank+1)·K). No biases (the dense FFN has none either, so
// E = G = 1 reproduces it exactly).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"

namespace finemoe {

struct MoEShape {
  int64_t d_model = 0;
  int64_t E = 1;                 // expansion rate
  int64_t G = 1;                 // granularity
  int64_t n_experts = 1;         // E·G (global)
  int64_t d_expert = 0;          // 4·d / G
  Routing routing = Routing::expert_choice;
  int64_t group_size = 256;      // expert choice: tokens per group (groups are local)
  int64_t capacity = 0;          // expert choice: tokens each expert takes per group
  double capacity_factor = 1.0;  // token choice
  int64_t top_k = 1;             // token choice
  // Auxiliary-loss coefficients (0 = off); see "Auxiliary losses" below.
  double balance_loss = 0;       // Switch/GShard load-balancing loss (token choice)
  double z_loss = 0;             // ST-MoE router z-loss (either routing)
  int64_t ep_size = 1;
  int64_t ep_rank = 0;
  int64_t local_experts() const { return n_experts / ep_size; }
  int64_t first_expert() const { return ep_rank * local_experts(); }
};

// The layer shape of `cfg` for EP rank ep_rank of ep_size (the one place it
// is derived from a Config; expert count and width from counting.hpp).
MoEShape moe_shape(const Config& cfg, int64_t ep_size = 1, int64_t ep_rank = 0);

// Telemetry of the last forward pass (this rank's tokens).
struct RoutingStats {
  std::vector<int64_t> tokens_per_expert;  // global E·G entries (assignments made by this rank)
  int64_t tokens = 0;
  double unserved_fraction = 0;  // expert choice: tokens with 0 experts; token choice: dropped assignments / all
  double router_entropy = 0;     // mean over tokens of the softmax entropy (nats)
  double mean_experts_per_token = 0;
  // Auxiliary-loss statistics of this rank's tokens, NOT multiplied by their
  // coefficients (computed whether or not the losses are on):
  double balance_loss = 0;  // B = E·G·Σ_i f_i·P_i, token-weighted over routing groups; 1 = perfectly balanced
  double z_loss = 0;        // Z = mean over tokens of logsumexp(router logits)²
  // Token choice: top-k choices per global expert BEFORE capacity drops (the
  // load the selection bias balances; tokens_per_expert counts after drops).
  // Expert choice: equal to tokens_per_expert.
  std::vector<int64_t> selected_per_expert;
};

// ---- Auxiliary losses -------------------------------------------------------
// Over a routing group g of S_g tokens (groups never cross ranks), with
// p_t = softmax(router logits of token t) and n_{g,i} the token slots of g the
// selection gives expert i (token choice: its top-k picks before capacity
// drops, as in Switch/GShard, which count the router's choice, not what
// capacity let through):
//   f_{g,i} = n_{g,i} / Σ_j n_{g,j}   fraction of the group's token slots (= n/(S_g·k)
//                                     for top-k: Switch's top-1 fraction divided by k)
//   P_{g,i} = (1/S_g) Σ_{t∈g} p_{t,i}  mean router probability
//   B_g     = E·G · Σ_i f_{g,i}·P_{g,i}      (exactly 1 when f_{g,i} = 1/(E·G) for all i;
//                                              larger when the routing is skewed)
// A layer's balance statistic is B = Σ_g (S_g/T)·B_g over its T tokens, and its
// z statistic Z = (1/T) Σ_t logsumexp(logits_t)² (ST-MoE). The layer adds
// shape.balance_loss·B + shape.z_loss·Z to the objective; f is piecewise
// constant (no gradient), so ∂B/∂p_{t,i} = E·G·f_{g(t),i}/T and
// ∂Z/∂logit_{t,j} = 2·logsumexp_t·p_{t,j}/T.
//
// Selection bias (DeepSeek-V3's auxiliary-loss-free balancing, token choice
// only): token t picks the top-k experts of p_{t,i} + bias_i, while the
// combine weights stay the unbiased p_{t,i}. Between steps
//   bias_i += rate · sign(mean_j load_j − load_i)
// with load_i the selection counts (selected_per_expert) of the whole global
// batch: integers summed over all ranks, so every rank computes the same bias.
void update_selection_bias(float* bias, const int64_t* load, int64_t n_experts, double rate);

// The token dispatcher: moves the MoE layer's token rows to the experts and
// back, permute and unpermute included, so the layer never needs to know
// which dispatcher it has (one rank, MPI all-to-all, later NCCL).
//
// Layouts. The SEND layout is this rank's A assignments sorted by GLOBAL
// expert id (counts[e] rows for expert e, E·G entries). The RECV layout is,
// for each LOCAL expert k in order, the rows every EP rank sent to it (source
// rank order, then source order), recv_counts[k] rows.
//
// Token level (what the MoE layer calls):
//   forward   xin = dispatch_tokens(x, tok, counts)     permute x's rows + send
//             y   = output_rows(y_send, R)              where the experts write
//             combine_rows(y, y_send)                   send back (unpermute's move)
//   backward  dy  = dispatch_rows(dy_send, counts)      gradients per assignment to the experts
//             dx  = output_rows(gx_send, R); combine_rows(dx, gx_send)
// Returned pointers stay valid until the next call of the same method. When
// the two layouts coincide (one rank) the implementation returns the caller's
// own rows and combine_rows is a no-op, so nothing is copied.
//
// Row level (dispatch/combine, the exchange alone): dispatch() returns in
// `recv` the recv layout of the send-layout rows `send`; combine() is the
// exact inverse permutation. `recv` is grown when too small and never shrunk,
// so steady-state steps do not allocate. The token-level calls are built on
// these by default.
//
// Memory: rows are in the memory of the dispatcher's backend (given at
// construction; the token-level calls must be given the same one), counts
// on the host (kernels.hpp, MoE kernels, "Memory").
class Dispatcher {
 public:
  explicit Dispatcher(Backend& be) : be_(be), stage_(be), inputs_(be), rows_(be), out_(be) {}
  virtual ~Dispatcher() = default;
  Backend& backend() const { return be_; }
  virtual void dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width,
                        DeviceBuffer<float>& recv, std::vector<int64_t>& recv_counts) = 0;
  virtual void combine(const float* recv_layout, int64_t width, float* send_layout) = 0;

  // Permute + send: the rows x[tok[i]] (i < Σcounts, send layout) to the
  // experts' ranks; returns the recv-layout rows and fills recv_counts.
  virtual const float* dispatch_tokens(Backend& be, const float* x, const int64_t* tok,
                                       const std::vector<int64_t>& counts, int64_t width,
                                       std::vector<int64_t>& recv_counts);
  // Send-layout rows (e.g. the output gradient per assignment) to the experts'
  // ranks, with the counts of the forward; returns the recv-layout rows.
  virtual const float* dispatch_rows(Backend& be, const float* send_rows, const std::vector<int64_t>& counts,
                                     int64_t width, std::vector<int64_t>& recv_counts);
  // Where the experts write `rows` recv-layout rows of `width` that
  // combine_rows will return into `send_layout`.
  virtual float* output_rows(float* send_layout, int64_t rows, int64_t width);
  // Recv-layout rows (from output_rows) back into send_layout.
  virtual void combine_rows(Backend& be, const float* recv_rows, int64_t width, float* send_layout);
  // True when dispatch moves no rows between ranks (one EP rank): the layer
  // then re-creates the experts' input rows in backward with another
  // dispatch_tokens (a local gather) instead of keeping a copy per layer.
  virtual bool rows_stay_on_rank() const { return false; }
  // Σ counts: the rows of a send or recv layout.
  static int64_t total_rows(const std::vector<int64_t>& counts);

  // Bytes moved off-rank by the last dispatch+combine (0 for LocalDispatcher).
  virtual int64_t last_bytes_sent() const { return 0; }
  // Totals since construction over every call (all layers, forward and
  // backward): bytes sent off-rank and wall seconds inside the collectives.
  // The trainer reports them per step so cluster scaling can be estimated.
  int64_t total_bytes_sent() const { return total_bytes_; }
  double total_comm_seconds() const { return total_seconds_; }

 protected:
  // Throws Error unless `be` is the dispatcher's own backend (its buffers
  // live there).
  void check_backend(const Backend& be) const;
  Backend& be_;
  int64_t total_bytes_ = 0;
  double total_seconds_ = 0;
  // Token-level buffers (grow-only), shared by the layers of one model: each
  // call's rows are consumed before the next layer calls.
  DeviceBuffer<float> stage_;   // permuted rows before the exchange
  DeviceBuffer<float> inputs_;  // dispatch_tokens' recv-layout rows
  DeviceBuffer<float> rows_;    // dispatch_rows' recv-layout rows
  DeviceBuffer<float> out_;     // output_rows
};

// One EP rank: moves nothing (see dispatcher_local.cpp). `be`: the rank's backend.
std::unique_ptr<Dispatcher> make_local_dispatcher(Backend& be = cpu_backend());

struct MoEWeights {
  const float* router = nullptr;  // [d, E·G] fp32
  const float* w1 = nullptr;      // [K, d, d_expert]
  const float* w2 = nullptr;      // [K, d_expert, d]
  // [E·G] token choice only (null = none): added to the router probabilities
  // for the top-k selection only (combine weights stay unbiased). Not a
  // trained weight: the trainer updates it with update_selection_bias.
  const float* selection_bias = nullptr;
};
struct MoEGrads {  // accumulated (+=)
  float* router = nullptr;
  float* w1 = nullptr;
  float* w2 = nullptr;
};

namespace moe {
struct Scratch;  // src/moe/workspace.hpp
}
// Scratch for the MoE layers of one model (what lives within one forward or
// one backward call), in `be`'s memory: the model makes one and hands it to
// every layer, so L layers keep one copy instead of L.
std::shared_ptr<moe::Scratch> make_moe_scratch(Backend& be);

class MoELayer {
 public:
  // `be` runs every kernel of the layer (the rank's backend; kernels.hpp) and
  // must be the dispatcher's. `scratch`: the model's shared scratch
  // (make_moe_scratch(be)); null gives the layer its own.
  MoELayer(const MoEShape& shape, Dispatcher& dispatcher, Backend& be = cpu_backend(),
           std::shared_ptr<moe::Scratch> scratch = nullptr);
  ~MoELayer();
  // x [T, d] (this rank's tokens, T a multiple of group_size for expert
  // choice) -> out [T, d] = Σ_e p_e(x) · expert_e(x) over the experts that
  // took the token. Keeps what backward needs.
  void forward(const float* x, float* out, int64_t T, const MoEWeights& w);
  // dx += ∂L/∂x, grads += ∂L/∂weights, given dout = ∂L/∂out. Gradient flows
  // through the routing weights into the router; the selection is constant.
  // The auxiliary losses (aux_loss()) enter with weight `aux_scale`: the
  // same factor that scales this rank's mean loss in the objective (the
  // Transformer's loss_scale = local tokens / global tokens).
  void backward(const float* dout, float* dx, const MoEWeights& w, const MoEGrads& g, double aux_scale = 1.0);
  // shape.balance_loss·B + shape.z_loss·Z of the last forward (this rank's
  // tokens; 0 when both coefficients are 0).
  double aux_loss() const;
  // Selection counts of the last forward (RoutingStats::selected_per_expert),
  // without computing the rest of the telemetry.
  const std::vector<int64_t>& selection_counts() const;
  const RoutingStats& stats() const;
  const MoEShape& shape() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace finemoe
