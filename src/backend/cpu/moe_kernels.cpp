// CpuBackend's MoE kernels (kernels.hpp, "MoE kernels"): the router's softmax,
// selections and statistics, the permute/unpermute of assignment rows and the
// experts' padded layout, as OpenMP loops. These loops are the ones src/moe
// ran before the backend object existed, moved verbatim (same code, same
// bits); the orchestration (src/moe) only calls them.
//
// Kernel scratch (the selections' per-thread key arrays, the counting sorts'
// cursors) is thread_local and grow-only: CpuBackend is one object per
// process, two models may train on two threads at once, and steady-state
// steps must not allocate. A parallel region reads the CALLING thread's
// scratch through a pointer taken before the region (a thread_local named
// inside it would be the worker's own).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_backend.hpp"

namespace finemoe::cpu {
namespace {

template <typename T>
T* grow(std::vector<T>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));  // grow-only: no allocation in steady state
  return v.data();
}

// n sort keys per OpenMP thread of this (calling) thread's selections.
uint64_t* key_scratch(int64_t n) {
  thread_local std::vector<uint64_t> keys;
  return grow(keys, int64_t(omp_get_max_threads()) * n);
}

// n cursors/counters for the sequential passes.
int64_t* index_scratch(int64_t n) {
  thread_local std::vector<int64_t> idx;
  return grow(idx, n);
}

// NaN sorts last so that the comparators stay strict weak orderings even when
// training has diverged (the trainer reports that; we must not crash first).
inline float key(float p) { return std::isnan(p) ? -1.0f : p; }

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

}  // namespace

void CpuBackend::moe_softmax(const float* logits, float* probs, float* lse, int64_t T, int64_t EG) {
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

// Groups outer, experts inner: the group's [S, E·G] probability block stays in
// cache while its columns are read.
void CpuBackend::moe_select_expert_choice(const float* P, int64_t T, int64_t EG, int64_t S, int64_t c, int64_t* tok,
                                          int64_t* expert, float* weight) {
  const int64_t groups = T / S, per_expert = groups * c;
  uint64_t* scratch = key_scratch(S);
#pragma omp parallel
  {
    uint64_t* keys = scratch + int64_t(omp_get_thread_num()) * S;
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
          tok[size_t(base + j)] = t;
          expert[size_t(base + j)] = e;
          weight[size_t(base + j)] = P[t * EG + e];
        }
      }
  }
}

void CpuBackend::moe_topk(const float* P, const float* bias, int64_t T, int64_t EG, int64_t k, int64_t* choice) {
  uint64_t* scratch = key_scratch(EG);
#pragma omp parallel
  {
    uint64_t* keys = scratch + int64_t(omp_get_thread_num()) * EG;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* p = P + t * EG;
      if (bias)
        for (int64_t j = 0; j < EG; ++j) keys[j] = rank_key(p[j] + bias[j], j);
      else
        for (int64_t j = 0; j < EG; ++j) keys[j] = rank_key(p[j], j);
      std::partial_sort(keys, keys + k, keys + EG);  // best first
      int64_t* ch = choice + t * k;
      for (int64_t j = 0; j < k; ++j) ch[j] = int64_t(keys[j] & 0xffffffffu);
    }
  }
}

// Sequential in token order: that order defines who drops.
int64_t CpuBackend::moe_capacity(int64_t* choice, int64_t T, int64_t EG, int64_t k, int64_t S, int64_t cap_full,
                                 int64_t cap_last, int64_t* counts, int64_t* selected, int64_t* group_sel) {
  int64_t* load = index_scratch(EG);  // running per-expert fill of the current group
  const int64_t ng = (T + S - 1) / S;
  std::fill(counts, counts + EG, int64_t(0));
  std::fill(selected, selected + EG, int64_t(0));
  std::fill(group_sel, group_sel + ng * EG, int64_t(0));
  int64_t dropped = 0, cap = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (t % S == 0) {  // new group: fresh capacity
      std::fill(load, load + EG, int64_t(0));
      cap = T - t < S ? cap_last : cap_full;
    }
    int64_t* gsel = group_sel + (t / S) * EG;
    for (int64_t j = 0; j < k; ++j) {
      int64_t& e = choice[size_t(t * k + j)];
      ++selected[size_t(e)];
      ++gsel[e];
      if (load[size_t(e)] < cap) {
        ++load[size_t(e)];
        ++counts[size_t(e)];
      } else {
        e = -1;
        ++dropped;
      }
    }
  }
  return dropped;
}

// Counting sort; visiting tokens ascending keeps every expert's rows in token order.
void CpuBackend::moe_expert_major(const int64_t* choice, const int64_t* counts, const float* P, int64_t T,
                                  int64_t EG, int64_t k, int64_t* tok, int64_t* expert, float* weight) {
  int64_t* cursor = index_scratch(EG);
  int64_t A = 0;
  for (int64_t e = 0; e < EG; ++e) {
    cursor[size_t(e)] = A;  // the write cursor of expert e
    A += counts[size_t(e)];
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = choice[size_t(t * k + j)];
      if (e < 0) continue;
      const int64_t i = cursor[size_t(e)]++;
      tok[size_t(i)] = t;
      expert[size_t(i)] = e;
      weight[size_t(i)] = P[t * EG + e];
    }
}

void CpuBackend::moe_token_view(const int64_t* tok, int64_t A, int64_t T, int64_t* tok_off, int64_t* by_tok) {
  int64_t* cursor = index_scratch(T);  // per-token fill
  std::fill(tok_off, tok_off + T + 1, int64_t(0));
  for (int64_t i = 0; i < A; ++i) ++tok_off[size_t(tok[i] + 1)];
  for (int64_t t = 0; t < T; ++t) tok_off[size_t(t + 1)] += tok_off[size_t(t)];
  std::fill(cursor, cursor + T, int64_t(0));
  for (int64_t i = 0; i < A; ++i) {
    const int64_t t = tok[i];
    by_tok[size_t(tok_off[t] + cursor[t]++)] = i;
  }
}

int64_t CpuBackend::moe_unserved_tokens(const int64_t* tok_off, int64_t T) {
  int64_t unserved = 0;
  for (int64_t t = 0; t < T; ++t) unserved += tok_off[size_t(t + 1)] == tok_off[size_t(t)];
  return unserved;
}

// Token-outer, expert-inner: contiguous reads, no scratch. Groups in
// parallel, each summed in token order, then the groups summed in order:
// deterministic for any thread count.
void CpuBackend::moe_aux_statistics(const float* P, const int64_t* group_sel, const float* lse, int64_t T,
                                    int64_t EG, int64_t S, double* group_frac, double* group_terms, double* balance,
                                    double* z_out) {
  const int64_t ng = (T + S - 1) / S;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t* n = group_sel + g * EG;
    double* f = group_frac + g * EG;
    int64_t slots = 0;
    for (int64_t i = 0; i < EG; ++i) slots += n[i];
    for (int64_t i = 0; i < EG; ++i) f[i] = slots > 0 ? double(n[i]) / double(slots) : 0.0;
    double term = 0.0;
    for (int64_t t = g * S; t < std::min(T, (g + 1) * S); ++t) {
      const float* p = P + t * EG;
      for (int64_t i = 0; i < EG; ++i) term += f[i] * double(p[i]);
    }
    group_terms[size_t(g)] = double(EG) * term / double(T);
  }
  *balance = 0.0;
  for (int64_t g = 0; g < ng; ++g) *balance += group_terms[size_t(g)];
  double z = 0.0;
  for (int64_t t = 0; t < T; ++t) z += double(lse[size_t(t)]) * double(lse[size_t(t)]);
  *z_out = T > 0 ? z / double(T) : 0.0;
}

// Per-token entropies in parallel, summed in token order (reproducible,
// unlike an OpenMP reduction whose combine order is unspecified).
double CpuBackend::moe_router_entropy(const float* probs, int64_t T, int64_t EG, double* entropy) {
  if (T == 0) return 0.0;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs + t * EG;
    double h = 0.0;
    for (int64_t j = 0; j < EG; ++j)
      if (p[j] > 0.0f) h -= double(p[j]) * std::log(double(p[j]));
    entropy[size_t(t)] = h;
  }
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) total += entropy[size_t(t)];
  return total / double(T);
}

void CpuBackend::moe_router_backward(const float* P, const float* lse, const double* group_frac,
                                     const int64_t* tok_off, const int64_t* by_tok, const int64_t* expert,
                                     const float* weight, const float* dprob, int64_t T, int64_t EG, int64_t S,
                                     bool aux, double cb, double cz, float* dlogits) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* p = P + t * EG;
    float* dl = dlogits + t * EG;
    float dot = 0.0f;
    for (int64_t a = tok_off[size_t(t)]; a < tok_off[size_t(t + 1)]; ++a) {
      const int64_t i = by_tok[size_t(a)];
      dot += dprob[i] * weight[size_t(i)];
    }
    if (aux) {
      const double* f = group_frac + (t / S) * EG;
      for (int64_t j = 0; j < EG; ++j) dot += float(cb * f[j]) * p[j];
      const float zc = float(cz * double(lse[size_t(t)]));
      for (int64_t j = 0; j < EG; ++j) dl[j] = p[j] * (float(cb * f[j]) - dot + zc);
    } else {
      for (int64_t j = 0; j < EG; ++j) dl[j] = -p[j] * dot;
    }
    for (int64_t a = tok_off[size_t(t)]; a < tok_off[size_t(t + 1)]; ++a) {
      const int64_t i = by_tok[size_t(a)];
      dl[expert[size_t(i)]] += p[expert[size_t(i)]] * dprob[i];
    }
  }
}

void CpuBackend::moe_gather_rows(const float* src, const int64_t* rows, int64_t A, int64_t d, float* dst) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < A; ++i)
    std::memcpy(dst + i * d, src + rows[size_t(i)] * d, size_t(d) * sizeof(float));
}

// One token per iteration (experts ascending): no write conflicts and a fixed
// summation order.
void CpuBackend::moe_combine(const float* y_send, const float* weight, const int64_t* tok_off,
                             const int64_t* by_tok, int64_t T, int64_t d, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * d;
    std::fill(o, o + d, 0.0f);
    for (int64_t a = tok_off[size_t(t)]; a < tok_off[size_t(t + 1)]; ++a) {
      const int64_t i = by_tok[size_t(a)];
      const float p = weight[size_t(i)];
      const float* y = y_send + i * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) o[j] += p * y[j];
    }
  }
}

// (Memory-bound: it streams y and writes dy. Leave the loop as it is: GCC
// vectorises the products and adds them in order but fuses the tail into
// FMAs, so any rewrite changes the last bits of dprob when d % 8 != 0.)
void CpuBackend::moe_combine_backward(const float* dout, const float* y_send, const int64_t* tok,
                                      const float* weight, int64_t A, int64_t d, float* dy_send, float* dprob) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < A; ++i) {
    const float* go = dout + tok[size_t(i)] * d;
    const float* y = y_send + i * d;
    float* dy = dy_send + i * d;
    const float p = weight[size_t(i)];
    float dp = 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      dp += go[j] * y[j];
      dy[j] = p * go[j];
    }
    dprob[i] = dp;
  }
}

void CpuBackend::moe_scatter_add(const float* gx, const int64_t* tok_off, const int64_t* by_tok, int64_t T,
                                 int64_t d, float* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* o = dx + t * d;
    for (int64_t a = tok_off[size_t(t)]; a < tok_off[size_t(t + 1)]; ++a) {
      const float* gi = gx + by_tok[size_t(a)] * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) o[j] += gi[j];
    }
  }
}

void CpuBackend::moe_to_padded(const float* packed, const int64_t* counts, const int64_t* offsets, int64_t K,
                               int64_t rmax, int64_t width, float* padded) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < K; ++k) {
    float* dst = padded + k * rmax * width;
    const int64_t n = counts[size_t(k)] * width;
    if (n) std::memcpy(dst, packed + offsets[size_t(k)] * width, size_t(n) * sizeof(float));
    std::memset(dst + n, 0, size_t(rmax * width - n) * sizeof(float));
  }
}

void CpuBackend::moe_zero_padding(float* padded, const int64_t* counts, int64_t K, int64_t rmax, int64_t width) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < K; ++k) {
    const int64_t n = counts[size_t(k)] * width;
    std::memset(padded + k * rmax * width + n, 0, size_t(rmax * width - n) * sizeof(float));
  }
}

}  // namespace finemoe::cpu
