// Router: fp32 logits, softmax, expert-choice / token-choice selection, and the
// router's backward, as calls of the rank's Backend (kernels.hpp, "MoE
// kernels"; the CPU loops live in src/backend/cpu/moe_kernels.cpp). Its
// [T,d]·[d,E·G] products go through Backend::gemm_fp32: fp32 whatever the GEMM
// precision (the paper keeps the router in fp32 when the backend runs bf16).
// What stays here is orchestration: sizing the Routes storage, the capacity
// arithmetic and the order of the kernels.
#include "router.hpp"

#include <cmath>
#include <string>

#include "finemoe/error.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::moe {
namespace {

// logits[T,EG] = x[T,d] · Wr[d,EG], in fp32 whatever the GEMM precision
// (OpenBLAS sgemm: its summation order depends on the shapes only, not on the
// thread count, so the routing stays deterministic).
void router_logits(Backend& be, const float* x, const float* Wr, float* logits, int64_t T, int64_t d, int64_t EG) {
  be.gemm_fp32(false, false, T, EG, d, 1.0f, x, d, Wr, EG, 0.0f, logits, EG);
}

// Sizes the expert-major list for A assignments.
void resize_list(Routes& r, int64_t A) {
  r.A = A;
  r.tok.grow(A);
  r.expert.grow(A);
  r.weight.grow(A);
}

// Every expert takes the top-`capacity` tokens of each group (ties: lower
// token index). Rows of expert e: groups in order, tokens ascending in a group.
void select_expert_choice(Backend& be, const MoEShape& s, Routes& r) {
  const int64_t T = r.T, EG = s.n_experts, S = s.group_size, c = s.capacity;
  const int64_t groups = T / S, per_expert = groups * c;
  r.counts.assign(size_t(EG), per_expert);
  resize_list(r, EG * per_expert);
  r.dropped = r.wanted = 0;
  // Every expert takes c slots of every group: f_{g,i} = 1/(E·G) by construction.
  r.selected.assign(size_t(EG), per_expert);
  r.group_sel.assign(size_t(groups * EG), c);
  be.moe_select_expert_choice(r.probs.data(), T, EG, S, c, r.tok.data(), r.expert.data(), r.weight.data());
}

// Each token picks its top_k experts (ties: lower expert id). Capacity is per
// routing group of `group_size` consecutive tokens (the last group may be
// shorter): within a group an expert accepts assignments until it holds
// ceil(cf · group · k / (E·G)) of them, visiting tokens in index order (and a
// token's choices best first), so the LATER tokens of a group are the ones
// dropped. Groups never cross ranks, so which tokens drop does not depend on
// how the batch is split over ranks. Deterministic for any thread count.
// With a selection bias the top-k is taken over p + bias (DeepSeek-V3); the
// combine weights stay p.
void select_token_choice(Backend& be, const MoEShape& s, const float* bias, Routes& r) {
  const int64_t T = r.T, EG = s.n_experts, k = s.top_k, S = s.group_size;
  r.choice.grow(T * k);
  be.moe_topk(r.probs.data(), bias, T, EG, k, r.choice.data());
  r.counts.resize(size_t(EG));
  r.selected.resize(size_t(EG));
  r.group_sel.resize(size_t(r.groups(S) * EG));
  const int64_t last = T % S == 0 ? S : T % S;  // the last group's length
  r.wanted = T * k;
  r.dropped = be.moe_capacity(r.choice.data(), T, EG, k, S, token_choice_capacity(s, S),
                              token_choice_capacity(s, last), r.counts.data(), r.selected.data(),
                              r.group_sel.data());
  resize_list(r, r.wanted - r.dropped);
  be.moe_expert_major(r.choice.data(), r.counts.data(), r.probs.data(), T, EG, k, r.tok.data(), r.expert.data(),
                      r.weight.data());
}

}  // namespace

int64_t token_choice_capacity(const MoEShape& s, int64_t T) {
  return int64_t(std::ceil(s.capacity_factor * double(T) * double(s.top_k) / double(s.n_experts)));
}

void route_forward(Backend& be, const MoEShape& s, const float* x, const float* Wr, const float* bias, int64_t T,
                   Routes& r) {
  const int64_t EG = s.n_experts;
  if (s.routing == Routing::expert_choice && T % s.group_size != 0)
    throw Error("MoE expert-choice routing: token count " + std::to_string(T) +
                " is not a multiple of moe.group_size " + std::to_string(s.group_size));
  if (s.routing == Routing::expert_choice && bias)
    throw Error("MoE expert-choice routing takes no selection bias (config key 'moe.bias_update_rate' is for "
                "token choice)");
  r.T = T;
  r.logits.grow(T * EG);
  r.probs.grow(T * EG);
  r.lse.grow(T);
  {
    FINEMOE_PROFILE("router_logits");
    router_logits(be, x, Wr, r.logits.data(), T, s.d_model, EG);
  }
  {
    FINEMOE_PROFILE("router_softmax");
    be.moe_softmax(r.logits.data(), r.probs.data(), r.lse.data(), T, EG);
  }
  {
    FINEMOE_PROFILE("router_select");
    if (s.routing == Routing::expert_choice)
      select_expert_choice(be, s, r);
    else
      select_token_choice(be, s, bias, r);
    // The per-token CSR view of the same assignments.
    r.tok_off.grow(T + 1);
    r.by_tok.grow(r.assignments());
    be.moe_token_view(r.tok.data(), r.assignments(), T, r.tok_off.data(), r.by_tok.data());
  }
  FINEMOE_PROFILE("router_aux");
  const int64_t ng = r.groups(s.group_size);
  r.group_frac.grow(ng * EG);
  r.group_terms.grow(ng);
  be.moe_aux_statistics(r.probs.data(), r.group_sel.data(), r.lse.data(), T, EG, s.group_size,
                        r.group_frac.data(), r.group_terms.data(), &r.balance, &r.z);
}

void route_backward(Backend& be, const MoEShape& s, const Routes& r, const float* dprob, double aux_scale,
                    const float* x, const float* Wr, float* dlogits, float* dWr, float* dx) {
  const int64_t T = r.T, EG = s.n_experts, d = s.d_model;
  {
    FINEMOE_PROFILE("router_bwd_softmax");
    // Softmax backward: dl_j = p_j (dp_j − Σ_e dp_e p_e), dp nonzero only on
    // the selected experts (the selection itself is piecewise constant).
    // With the auxiliary losses: ∂/∂p_{t,j} gains a_j = cb·f_{g(t),j} (dense
    // over experts, through the softmax), ∂/∂logit_{t,j} gains cz·lse_t·p_j.
    const bool aux = (s.balance_loss != 0.0 || s.z_loss != 0.0) && T > 0;
    const double cb = aux ? s.balance_loss * aux_scale * double(EG) / double(T) : 0.0;
    const double cz = aux ? s.z_loss * aux_scale * 2.0 / double(T) : 0.0;
    be.moe_router_backward(r.probs.data(), r.lse.data(), r.group_frac.data(), r.tok_off.data(), r.by_tok.data(),
                           r.expert.data(), r.weight.data(), dprob, T, EG, s.group_size, aux, cb, cz, dlogits);
  }
  {
    FINEMOE_PROFILE("router_bwd_dwr");
    // dWr[d,EG] += xᵀ·dlogits (fp32, like the forward product)
    be.gemm_fp32(true, false, d, EG, T, 1.0f, x, d, dlogits, EG, 1.0f, dWr, EG);
  }
  {
    FINEMOE_PROFILE("router_bwd_dx");
    // dx[T,d] += dlogits·Wrᵀ
    be.gemm_fp32(false, true, T, d, EG, 1.0f, dlogits, EG, Wr, EG, 1.0f, dx, d);
  }
}

double router_entropy(Backend& be, Routes& r, int64_t EG) {
  r.entropy.grow(r.T);
  return be.moe_router_entropy(r.probs.data(), r.T, EG, r.entropy.data());
}

}  // namespace finemoe::moe
