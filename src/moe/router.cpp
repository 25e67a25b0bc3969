// Router: fp32 logits, softmax, expert-choice / token-choice selection, and the
// router's backward. Its [T,d]·[d,E·G] products go through backend::gemm_fp32:
// fp32 whatever the GEMM precision (the paper keeps the router in fp32 when the
// backend runs bf16). Softmax, selection and their backward are loops here.
#include "router.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::moe {
namespace {

// NaN sorts last so that the comparators stay strict weak orderings even when
// training has diverged (the trainer reports that; we must not crash first).
inline float key(float p) { return std::isnan(p) ? -1.0f : p; }

// logits[T,EG] = x[T,d] · Wr[d,EG], in fp32 whatever the GEMM precision
// (OpenBLAS sgemm: its summation order depends on the shapes only, not on the
// thread count, so the routing stays deterministic).
void router_logits(const float* x, const float* Wr, float* logits, int64_t T, int64_t d, int64_t EG) {
  backend::gemm_fp32(false, false, T, EG, d, 1.0f, x, d, Wr, EG, 0.0f, logits, EG);
}

// Also keeps each token's logsumexp (the z-loss's input): m + log Σ exp(l − m).
void softmax_rows(const float* logits, float* probs, float* lse, int64_t T, int64_t EG) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits + t * EG;
    float* p = probs + t * EG;
    float m = l[0];
    for (int64_t j = 1; j < EG; ++j) m = std::max(m, l[j]);
    float s = 0.0f;
    for (int64_t j = 0; j < EG; ++j) {
      p[j] = std::exp(l[j] - m);
      s += p[j];
    }
    for (int64_t j = 0; j < EG; ++j) p[j] /= s;
    lse[t] = m + std::log(s);
  }
}

// Fills the per-token CSR view from the expert-major assignment list.
void build_token_view(Routes& r) {
  const int64_t T = r.T, A = r.assignments();
  r.tok_off.assign(size_t(T + 1), 0);
  for (int64_t i = 0; i < A; ++i) ++r.tok_off[size_t(r.tok[i] + 1)];
  for (int64_t t = 0; t < T; ++t) r.tok_off[size_t(t + 1)] += r.tok_off[size_t(t)];
  r.by_tok.resize(size_t(A));
  r.load.assign(size_t(T), 0);  // reused as a per-token cursor here
  for (int64_t i = 0; i < A; ++i) {
    const int64_t t = r.tok[i];
    r.by_tok[size_t(r.tok_off[t] + r.load[t]++)] = i;
  }
}

// Sort key of (probability p, index i) such that ascending keys are p
// descending, then i ascending: the selection order of both routings. The
// float's bits are mapped to an unsigned integer of the same order (NaN -> -1
// via key(), -0 -> +0 so that it ties with +0 as the float compare does), then
// complemented into the high half; the index fills the low half. One integer
// compare replaces the two-level float comparator, and nth_element on these
// keys picks exactly the set partial_sort picked (the order is total).
inline uint64_t rank_key(float p, int64_t i) {
  const float k = key(p) + 0.0f;
  uint32_t u;
  std::memcpy(&u, &k, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(~u) << 32) | uint64_t(uint32_t(i));
}

// Every expert takes the top-`capacity` tokens of each group (ties: lower
// token index). Rows of expert e: groups in order, tokens ascending in a group.
// Groups outer, experts inner: the group's [S, E·G] probability block stays in
// cache while its columns are read.
void select_expert_choice(const MoEShape& s, Routes& r) {
  const int64_t T = r.T, EG = s.n_experts, S = s.group_size, c = s.capacity;
  const int64_t groups = T / S, per_expert = groups * c;
  const float* P = r.probs.data();
  r.counts.assign(size_t(EG), per_expert);
  r.tok.resize(size_t(EG * per_expert));
  r.expert.resize(r.tok.size());
  r.weight.resize(r.tok.size());
  r.scratch.resize(size_t(omp_get_max_threads() * S));
  r.dropped = r.wanted = 0;
  // Every expert takes c slots of every group: f_{g,i} = 1/(E·G) by construction.
  r.selected.assign(size_t(EG), per_expert);
  r.group_sel.assign(size_t(groups * EG), c);
#pragma omp parallel
  {
    uint64_t* keys = reinterpret_cast<uint64_t*>(r.scratch.data()) + int64_t(omp_get_thread_num()) * S;
#pragma omp for schedule(static) collapse(2)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t e = 0; e < EG; ++e) {
        const float* pg = P + g * S * EG + e;
        for (int64_t j = 0; j < S; ++j) keys[j] = rank_key(pg[j * EG], j);
        if (c < S) std::nth_element(keys, keys + c, keys + S);
        // The c best, by token index (the low half of the key).
        for (int64_t j = 0; j < c; ++j) keys[j] &= 0xffffffffu;
        std::sort(keys, keys + c);
        const int64_t base = e * per_expert + g * c;
        for (int64_t j = 0; j < c; ++j) {
          const int64_t t = g * S + int64_t(keys[j]);
          r.tok[size_t(base + j)] = t;
          r.expert[size_t(base + j)] = e;
          r.weight[size_t(base + j)] = P[t * EG + e];
        }
      }
  }
}

// Each token picks its top_k experts (ties: lower expert id). Capacity is per
// routing group of `group_size` consecutive tokens (the last group may be
// shorter): within a group an expert accepts assignments until it holds
// ceil(cf · group · k / (E·G)) of them, visiting tokens in index order (and a
// token's choices best first), so the LATER tokens of a group are the ones
// dropped. Groups never cross ranks, so which tokens drop does not depend on
// how the batch is split over ranks. Deterministic for any thread count.
// With a selection bias the top-k is taken over p + bias (DeepSeek-V3); the
// combine weights below stay p.
void select_token_choice(const MoEShape& s, const float* bias, Routes& r) {
  const int64_t T = r.T, EG = s.n_experts, k = s.top_k, S = s.group_size;
  const float* P = r.probs.data();
  r.choice.resize(size_t(T * k));
  r.scratch.resize(size_t(omp_get_max_threads() * EG));
#pragma omp parallel
  {
    uint64_t* keys = reinterpret_cast<uint64_t*>(r.scratch.data()) + int64_t(omp_get_thread_num()) * EG;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* p = P + t * EG;
      if (bias)
        for (int64_t j = 0; j < EG; ++j) keys[j] = rank_key(p[j] + bias[j], j);
      else
        for (int64_t j = 0; j < EG; ++j) keys[j] = rank_key(p[j], j);
      std::partial_sort(keys, keys + k, keys + EG);  // best first
      int64_t* ch = r.choice.data() + t * k;
      for (int64_t j = 0; j < k; ++j) ch[j] = int64_t(keys[j] & 0xffffffffu);
    }
  }
  // Capacity pass: sequential in token order (that order defines who drops).
  r.counts.assign(size_t(EG), 0);  // assignments kept per expert, all groups
  r.selected.assign(size_t(EG), 0);  // choices before drops, all groups
  r.group_sel.assign(size_t(r.groups(S) * EG), 0);
  r.dropped = 0;
  r.wanted = T * k;
  int64_t cap = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (t % S == 0) {  // new group: fresh capacity
      r.load.assign(size_t(EG), 0);
      cap = token_choice_capacity(s, std::min(S, T - t));
    }
    int64_t* gsel = r.group_sel.data() + (t / S) * EG;
    for (int64_t j = 0; j < k; ++j) {
      int64_t& e = r.choice[size_t(t * k + j)];
      ++r.selected[size_t(e)];
      ++gsel[e];
      if (r.load[size_t(e)] < cap) {
        ++r.load[size_t(e)];
        ++r.counts[size_t(e)];
      } else {
        e = -1;
        ++r.dropped;
      }
    }
  }
  // Expert-major list by counting sort; visiting tokens ascending keeps every
  // expert's rows in token order.
  r.load.resize(size_t(EG));
  int64_t A = 0;
  for (int64_t e = 0; e < EG; ++e) {
    r.load[size_t(e)] = A;  // now the write cursor of expert e
    A += r.counts[size_t(e)];
  }
  r.tok.resize(size_t(A));
  r.expert.resize(size_t(A));
  r.weight.resize(size_t(A));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = r.choice[size_t(t * k + j)];
      if (e < 0) continue;
      const int64_t i = r.load[size_t(e)]++;
      r.tok[size_t(i)] = t;
      r.expert[size_t(i)] = e;
      r.weight[size_t(i)] = P[t * EG + e];
    }
}

template <typename T>
void ensure(Buffer<T>& b, size_t n) {
  if (b.size() < n) b.resize(n);
}

// The balance and z statistics of moe.hpp ("Auxiliary losses"). Per group:
// f from the selection counts, then (S_g/T)·B_g = E·G·Σ_{t∈g} Σ_i f_{g,i}·p_{t,i} / T
// (token-outer, expert-inner: contiguous reads, no scratch). Groups in
// parallel, each summed in token order, then the groups summed in order:
// deterministic for any thread count.
void aux_statistics(const MoEShape& s, Routes& r) {
  const int64_t T = r.T, EG = s.n_experts, S = s.group_size, ng = r.groups(S);
  r.group_frac.resize(size_t(ng * EG));
  r.group_terms.resize(size_t(ng));
  const float* P = r.probs.data();
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t* n = r.group_sel.data() + g * EG;
    double* f = r.group_frac.data() + g * EG;
    int64_t slots = 0;
    for (int64_t i = 0; i < EG; ++i) slots += n[i];
    for (int64_t i = 0; i < EG; ++i) f[i] = slots > 0 ? double(n[i]) / double(slots) : 0.0;
    double term = 0.0;
    for (int64_t t = g * S; t < std::min(T, (g + 1) * S); ++t) {
      const float* p = P + t * EG;
      for (int64_t i = 0; i < EG; ++i) term += f[i] * double(p[i]);
    }
    r.group_terms[size_t(g)] = double(EG) * term / double(T);
  }
  r.balance = 0.0;
  for (double b : r.group_terms) r.balance += b;
  double z = 0.0;
  for (int64_t t = 0; t < T; ++t) z += double(r.lse[size_t(t)]) * double(r.lse[size_t(t)]);
  r.z = T > 0 ? z / double(T) : 0.0;
}

}  // namespace

int64_t token_choice_capacity(const MoEShape& s, int64_t T) {
  return int64_t(std::ceil(s.capacity_factor * double(T) * double(s.top_k) / double(s.n_experts)));
}

void route_forward(const MoEShape& s, const float* x, const float* Wr, const float* bias, int64_t T, Routes& r) {
  const int64_t EG = s.n_experts;
  if (s.routing == Routing::expert_choice && T % s.group_size != 0)
    throw Error("MoE expert-choice routing: token count " + std::to_string(T) +
                " is not a multiple of moe.group_size " + std::to_string(s.group_size));
  if (s.routing == Routing::expert_choice && bias)
    throw Error("MoE expert-choice routing takes no selection bias (config key 'moe.bias_update_rate' is for "
                "token choice)");
  r.T = T;
  ensure(r.logits, size_t(T * EG));
  ensure(r.probs, size_t(T * EG));
  r.lse.resize(size_t(T));
  {
    FINEMOE_PROFILE("router_logits");
    router_logits(x, Wr, r.logits.data(), T, s.d_model, EG);
  }
  {
    FINEMOE_PROFILE("router_softmax");
    softmax_rows(r.logits.data(), r.probs.data(), r.lse.data(), T, EG);
  }
  {
    FINEMOE_PROFILE("router_select");
    if (s.routing == Routing::expert_choice)
      select_expert_choice(s, r);
    else
      select_token_choice(s, bias, r);
    build_token_view(r);
  }
  FINEMOE_PROFILE("router_aux");
  aux_statistics(s, r);
}

void route_backward(const MoEShape& s, const Routes& r, const float* dprob, double aux_scale, const float* x,
                    const float* Wr, float* dlogits, float* dWr, float* dx) {
  const int64_t T = r.T, EG = s.n_experts, d = s.d_model;
  const float* P = r.probs.data();
  {
    FINEMOE_PROFILE("router_bwd_softmax");
    // Softmax backward: dl_j = p_j (dp_j − Σ_e dp_e p_e), dp nonzero only on
    // the selected experts (the selection itself is piecewise constant).
    // With the auxiliary losses: ∂/∂p_{t,j} gains a_j = cb·f_{g(t),j} (dense
    // over experts, through the softmax), ∂/∂logit_{t,j} gains cz·lse_t·p_j.
    const bool aux = (s.balance_loss != 0.0 || s.z_loss != 0.0) && T > 0;
    const double cb = aux ? s.balance_loss * aux_scale * double(EG) / double(T) : 0.0;
    const double cz = aux ? s.z_loss * aux_scale * 2.0 / double(T) : 0.0;
    const int64_t S = s.group_size;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* p = P + t * EG;
      float* dl = dlogits + t * EG;
      float dot = 0.0f;
      for (int64_t a = r.tok_off[size_t(t)]; a < r.tok_off[size_t(t + 1)]; ++a) {
        const int64_t i = r.by_tok[size_t(a)];
        dot += dprob[i] * r.weight[size_t(i)];
      }
      if (aux) {
        const double* f = r.group_frac.data() + (t / S) * EG;
        for (int64_t j = 0; j < EG; ++j) dot += float(cb * f[j]) * p[j];
        const float zc = float(cz * double(r.lse[size_t(t)]));
        for (int64_t j = 0; j < EG; ++j) dl[j] = p[j] * (float(cb * f[j]) - dot + zc);
      } else {
        for (int64_t j = 0; j < EG; ++j) dl[j] = -p[j] * dot;
      }
      for (int64_t a = r.tok_off[size_t(t)]; a < r.tok_off[size_t(t + 1)]; ++a) {
        const int64_t i = r.by_tok[size_t(a)];
        dl[r.expert[size_t(i)]] += p[r.expert[size_t(i)]] * dprob[i];
      }
    }
  }
  {
    FINEMOE_PROFILE("router_bwd_dwr");
    // dWr[d,EG] += xᵀ·dlogits (fp32, like the forward product)
    backend::gemm_fp32(true, false, d, EG, T, 1.0f, x, d, dlogits, EG, 1.0f, dWr, EG);
  }
  {
    FINEMOE_PROFILE("router_bwd_dx");
    // dx[T,d] += dlogits·Wrᵀ
    backend::gemm_fp32(false, true, T, d, EG, 1.0f, dlogits, EG, Wr, EG, 1.0f, dx, d);
  }
}

double router_entropy(Routes& r, int64_t EG) {
  if (r.T == 0) return 0.0;
  // Per-token entropies in parallel, summed in token order (reproducible,
  // unlike an OpenMP reduction whose combine order is unspecified).
  r.entropy.resize(size_t(r.T));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < r.T; ++t) {
    const float* p = r.probs.data() + t * EG;
    double h = 0.0;
    for (int64_t j = 0; j < EG; ++j)
      if (p[j] > 0.0f) h -= double(p[j]) * std::log(double(p[j]));
    r.entropy[size_t(t)] = h;
  }
  double total = 0.0;
  for (double h : r.entropy) total += h;
  return total / double(r.T);
}

}  // namespace finemoe::moe
