// Naive MoE kernels: each kernels.hpp definition ("MoE kernels") as the plain
// loops it states, one thread. The selections use the definition's order
// directly (a two-level compare: value descending, then index ascending,
// NaN as -1, and -0 == +0 as the float compare already has it) and pick by
// repeated "best not yet taken", so they share nothing with the CPU kernels'
// sort keys and must still pick the same sets in the same order. Sums are
// accumulated in double where the CPU kernel uses float: the reference is
// the more accurate side.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "naive_backend.hpp"

namespace finemoe::testing {
namespace {

// The value a selection ranks: NaN as -1 (kernels.hpp, "Selection order").
float rank_value(float v) { return std::isnan(v) ? -1.0f : v; }

// True when (va, ia) comes before (vb, ib) in the selection order.
bool before(float va, int64_t ia, float vb, int64_t ib) {
  const float a = rank_value(va), b = rank_value(vb);
  if (a != b) return a > b;
  return ia < ib;
}

}  // namespace

void NaiveBackend::moe_softmax(const float* logits, float* probs, float* lse, int64_t T, int64_t EG) {
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits + t * EG;
    float m = l[0];
    for (int64_t j = 1; j < EG; ++j)
      if (l[j] > m) m = l[j];
    double s = 0.0;
    for (int64_t j = 0; j < EG; ++j) s += std::exp(double(l[j]) - double(m));
    for (int64_t j = 0; j < EG; ++j) probs[t * EG + j] = float(std::exp(double(l[j]) - double(m)) / s);
    lse[t] = float(double(m) + std::log(s));
  }
}

void NaiveBackend::moe_select_expert_choice(const float* probs, int64_t T, int64_t EG, int64_t S, int64_t c,
                                            int64_t* tok, int64_t* expert, float* weight) {
  const int64_t groups = T / S;
  std::vector<char> taken(static_cast<size_t>(S));
  for (int64_t e = 0; e < EG; ++e)
    for (int64_t g = 0; g < groups; ++g) {
      // Mark the c best tokens of the group, then list them ascending.
      for (int64_t j = 0; j < S; ++j) taken[size_t(j)] = 0;
      for (int64_t n = 0; n < c; ++n) {
        int64_t best = -1;
        for (int64_t j = 0; j < S; ++j)
          if (!taken[size_t(j)] &&
              (best < 0 || before(probs[(g * S + j) * EG + e], j, probs[(g * S + best) * EG + e], best)))
            best = j;
        taken[size_t(best)] = 1;
      }
      int64_t row = e * groups * c + g * c;
      for (int64_t j = 0; j < S; ++j)
        if (taken[size_t(j)]) {
          const int64_t t = g * S + j;
          tok[row] = t;
          expert[row] = e;
          weight[row] = probs[t * EG + e];
          ++row;
        }
    }
}

void NaiveBackend::moe_topk(const float* probs, const float* bias, int64_t T, int64_t EG, int64_t k,
                            int64_t* choice) {
  std::vector<char> taken(static_cast<size_t>(EG));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < EG; ++j) taken[size_t(j)] = 0;
    for (int64_t n = 0; n < k; ++n) {
      int64_t best = -1;
      for (int64_t j = 0; j < EG; ++j) {
        if (taken[size_t(j)]) continue;
        const float v = probs[t * EG + j] + (bias ? bias[j] : 0.0f);
        const float vb = best < 0 ? 0.0f : probs[t * EG + best] + (bias ? bias[best] : 0.0f);
        if (best < 0 || before(v, j, vb, best)) best = j;
      }
      taken[size_t(best)] = 1;
      choice[t * k + n] = best;
    }
  }
}

int64_t NaiveBackend::moe_capacity(int64_t* choice, int64_t T, int64_t EG, int64_t k, int64_t S, int64_t cap,
                                   int64_t cap_last, int64_t* counts, int64_t* selected, int64_t* group_sel) {
  const int64_t ng = (T + S - 1) / S;
  for (int64_t e = 0; e < EG; ++e) counts[e] = selected[e] = 0;
  for (int64_t i = 0; i < ng * EG; ++i) group_sel[i] = 0;
  std::vector<int64_t> load(static_cast<size_t>(EG));
  int64_t dropped = 0;
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t first = g * S, last = std::min(T, first + S);
    const int64_t limit = last - first < S ? cap_last : cap;
    for (int64_t e = 0; e < EG; ++e) load[size_t(e)] = 0;
    for (int64_t t = first; t < last; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = choice[t * k + j];
        ++selected[e];
        ++group_sel[g * EG + e];
        if (load[size_t(e)] < limit) {
          ++load[size_t(e)];
          ++counts[e];
        } else {
          choice[t * k + j] = -1;
          ++dropped;
        }
      }
  }
  return dropped;
}

void NaiveBackend::moe_expert_major(const int64_t* choice, const int64_t* /*counts*/, const float* probs,
                                    int64_t T, int64_t EG, int64_t k, int64_t* tok, int64_t* expert,
                                    float* weight) {
  // Expert by expert, tokens ascending: the definition of the order itself.
  int64_t i = 0;
  for (int64_t e = 0; e < EG; ++e)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (choice[t * k + j] == e) {
          tok[i] = t;
          expert[i] = e;
          weight[i] = probs[t * EG + e];
          ++i;
        }
}

void NaiveBackend::moe_token_view(const int64_t* tok, int64_t A, int64_t T, int64_t* tok_off, int64_t* by_tok) {
  // Token by token, assignments ascending.
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t) {
    tok_off[t] = n;
    for (int64_t i = 0; i < A; ++i)
      if (tok[i] == t) by_tok[n++] = i;
  }
  tok_off[T] = n;
}

int64_t NaiveBackend::moe_unserved_tokens(const int64_t* tok_off, int64_t T) {
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t)
    if (tok_off[t + 1] == tok_off[t]) ++n;
  return n;
}

void NaiveBackend::moe_aux_statistics(const float* probs, const int64_t* group_sel, const float* lse, int64_t T,
                                      int64_t EG, int64_t S, double* group_frac, double* group_terms,
                                      double* balance, double* z) {
  const int64_t ng = (T + S - 1) / S;
  *balance = 0.0;
  for (int64_t g = 0; g < ng; ++g) {
    int64_t slots = 0;
    for (int64_t i = 0; i < EG; ++i) slots += group_sel[g * EG + i];
    for (int64_t i = 0; i < EG; ++i)
      group_frac[g * EG + i] = slots > 0 ? double(group_sel[g * EG + i]) / double(slots) : 0.0;
    double term = 0.0;
    for (int64_t t = g * S; t < std::min(T, (g + 1) * S); ++t)
      for (int64_t i = 0; i < EG; ++i) term += group_frac[g * EG + i] * double(probs[t * EG + i]);
    group_terms[g] = double(EG) * term / double(T);
    *balance += group_terms[g];
  }
  double zs = 0.0;
  for (int64_t t = 0; t < T; ++t) zs += double(lse[t]) * double(lse[t]);
  *z = T > 0 ? zs / double(T) : 0.0;
}

double NaiveBackend::moe_router_entropy(const float* probs, int64_t T, int64_t EG, double* entropy) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    double h = 0.0;
    for (int64_t j = 0; j < EG; ++j) {
      const double p = probs[t * EG + j];
      if (p > 0.0) h -= p * std::log(p);
    }
    entropy[t] = h;
    total += h;
  }
  return T > 0 ? total / double(T) : 0.0;
}

void NaiveBackend::moe_router_backward(const float* probs, const float* lse, const double* group_frac,
                                       const int64_t* tok_off, const int64_t* by_tok, const int64_t* expert,
                                       const float* weight, const float* dprob, int64_t T, int64_t EG, int64_t S,
                                       bool aux, double cb, double cz, float* dlogits) {
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs + t * EG;
    double dot = 0.0;
    for (int64_t a = tok_off[t]; a < tok_off[t + 1]; ++a) dot += double(dprob[by_tok[a]]) * weight[by_tok[a]];
    const double* f = aux ? group_frac + (t / S) * EG : nullptr;
    if (aux)
      for (int64_t j = 0; j < EG; ++j) dot += double(float(cb * f[j])) * p[j];
    for (int64_t j = 0; j < EG; ++j) {
      double dl = aux ? double(p[j]) * (double(float(cb * f[j])) - dot + double(float(cz * double(lse[t]))))
                      : -double(p[j]) * dot;
      for (int64_t a = tok_off[t]; a < tok_off[t + 1]; ++a)
        if (expert[by_tok[a]] == j) dl += double(p[j]) * dprob[by_tok[a]];
      dlogits[t * EG + j] = float(dl);
    }
  }
}

void NaiveBackend::moe_gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t d, float* dst) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) dst[i * d + j] = src[rows[i] * d + j];
}

void NaiveBackend::moe_combine(const float* y, const float* weight, const int64_t* tok_off, const int64_t* by_tok,
                               int64_t T, int64_t d, float* out) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < d; ++j) {
      double s = 0.0;
      for (int64_t a = tok_off[t]; a < tok_off[t + 1]; ++a) s += double(weight[by_tok[a]]) * y[by_tok[a] * d + j];
      out[t * d + j] = float(s);
    }
}

void NaiveBackend::moe_combine_backward(const float* dout, const float* y, const int64_t* tok, const float* weight,
                                        int64_t A, int64_t d, float* dy, float* dprob) {
  for (int64_t i = 0; i < A; ++i) {
    double dp = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dp += double(dout[tok[i] * d + j]) * y[i * d + j];
      dy[i * d + j] = weight[i] * dout[tok[i] * d + j];
    }
    dprob[i] = float(dp);
  }
}

void NaiveBackend::moe_scatter_add(const float* gx, const int64_t* tok_off, const int64_t* by_tok, int64_t T,
                                   int64_t d, float* dx) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < d; ++j) {
      double s = dx[t * d + j];
      for (int64_t a = tok_off[t]; a < tok_off[t + 1]; ++a) s += gx[by_tok[a] * d + j];
      dx[t * d + j] = float(s);
    }
}

void NaiveBackend::moe_to_padded(const float* packed, const int64_t* counts, const int64_t* offsets, int64_t K,
                                 int64_t rmax, int64_t width, float* padded) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r = 0; r < rmax; ++r)
      for (int64_t j = 0; j < width; ++j)
        padded[(k * rmax + r) * width + j] = r < counts[k] ? packed[(offsets[k] + r) * width + j] : 0.0f;
}

void NaiveBackend::moe_zero_padding(float* padded, const int64_t* counts, int64_t K, int64_t rmax, int64_t width) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r = counts[k]; r < rmax; ++r)
      for (int64_t j = 0; j < width; ++j) padded[(k * rmax + r) * width + j] = 0.0f;
}

}  // namespace finemoe::testing
