// Naive dense transformer kernels: each one the plain loops of its definition
// (kernels.hpp), one thread, sums and softmax normalisers in double, results
// rounded to float once. Forward kernels overwrite their outputs; every
// *_backward accumulates (+=) into its gradients (relu_backward_inplace
// overwrites, as its definition says).
#include <algorithm>
#include <cmath>
#include <vector>

#include "finemoe/rng.hpp"
#include "naive_backend.hpp"

namespace finemoe::testing {

namespace {
constexpr double kLnEps = 1e-5;  // LayerNorm eps (kernels.hpp)
}  // namespace

// ---- embedding ----------------------------------------------------------------

void NaiveBackend::embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                     int64_t B, int64_t T, int64_t d) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t;
      for (int64_t i = 0; i < d; ++i) out[r * d + i] = wte[int64_t(tokens[r]) * d + i] + wpe[t * d + i];
    }
}

void NaiveBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B,
                                      int64_t T, int64_t d) {
  // Scatter-add, rows in order (a repeated token adds into the same wte row).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t;
      for (int64_t i = 0; i < d; ++i) {
        dwte[int64_t(tokens[r]) * d + i] += dout[r * d + i];
        dwpe[t * d + i] += dout[r * d + i];
      }
    }
}

// ---- LayerNorm ----------------------------------------------------------------

void NaiveBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                     const float* b, int64_t N, int64_t d) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * d;
    double m = 0.0;
    for (int64_t i = 0; i < d; ++i) m += x[i];
    m /= double(d);
    double v = 0.0;
    for (int64_t i = 0; i < d; ++i) v += (x[i] - m) * (x[i] - m);
    v /= double(d);
    const double rs = 1.0 / std::sqrt(v + kLnEps);
    for (int64_t i = 0; i < d; ++i) out[n * d + i] = float((x[i] - m) * rs * w[i] + b[i]);
    mean[n] = float(m);
    rstd[n] = float(rs);
  }
}

void NaiveBackend::layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                      const float* w, const float* mean, const float* rstd, int64_t N, int64_t d) {
  // xhat = (x - mean)·rstd from the SAVED statistics; dxhat = dout·w;
  // dx = rstd·(dxhat - mean(dxhat) - xhat·mean(dxhat·xhat)).
  std::vector<double> sw(static_cast<size_t>(d), 0.0), sb(static_cast<size_t>(d), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * d;
    const float* g = dout + n * d;
    const double m = mean[n], rs = rstd[n];
    double mg = 0.0, mgx = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      const double xh = (x[i] - m) * rs, dxh = double(g[i]) * w[i];
      mg += dxh;
      mgx += dxh * xh;
    }
    mg /= double(d);
    mgx /= double(d);
    for (int64_t i = 0; i < d; ++i) {
      const double xh = (x[i] - m) * rs, dxh = double(g[i]) * w[i];
      dinp[n * d + i] = float(dinp[n * d + i] + rs * (dxh - mg - xh * mgx));
      sw[size_t(i)] += double(g[i]) * xh;
      sb[size_t(i)] += g[i];
    }
  }
  for (int64_t i = 0; i < d; ++i) {
    dw[i] = float(dw[i] + sw[size_t(i)]);
    db[i] = float(db[i] + sb[size_t(i)]);
  }
}

// ---- linear -------------------------------------------------------------------

void NaiveBackend::linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N,
                                  int64_t C, int64_t OC) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double s = b ? double(b[o]) : 0.0;
      for (int64_t c = 0; c < C; ++c) s += double(inp[n * C + c]) * W[c * OC + o];
      out[n * OC + o] = float(s);
    }
}

void NaiveBackend::linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N,
                                       int64_t C, int64_t OC) {
  linear_forward(out, inp, W, b, N, C, OC);
  for (int64_t i = 0; i < N * OC; ++i) out[i] = std::max(out[i], 0.0f);
}

void NaiveBackend::linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp,
                                   const float* W, int64_t N, int64_t C, int64_t OC) {
  if (dinp)  // dinp[n,c] += Σ_o dout[n,o]·W[c,o]
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        double s = 0.0;
        for (int64_t o = 0; o < OC; ++o) s += double(dout[n * OC + o]) * W[c * OC + o];
        dinp[n * C + c] = float(dinp[n * C + c] + s);
      }
  // dW[c,o] += Σ_n inp[n,c]·dout[n,o]
  for (int64_t c = 0; c < C; ++c)
    for (int64_t o = 0; o < OC; ++o) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) s += double(inp[n * C + c]) * dout[n * OC + o];
      dW[c * OC + o] = float(dW[c * OC + o] + s);
    }
  if (db)  // db[o] += Σ_n dout[n,o]
    for (int64_t o = 0; o < OC; ++o) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) s += dout[n * OC + o];
      db[o] = float(db[o] + s);
    }
}

// ---- causal multi-head attention ------------------------------------------------
// qkv [B,T,3d] = q | k | v per token; head h is columns [h·hd, (h+1)·hd) of
// each of them (hd = d/H). att [B,H,T,T]: row t holds the softmax over keys
// 0..t of scale·q_t·k_j, exactly 0 for keys j > t.

void NaiveBackend::attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d,
                                     int64_t H) {
  const int64_t hd = d / H, C3 = 3 * d;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> pre(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv + (b * T + t) * C3 + h * hd;
        float* p = att + ((b * H + h) * T + t) * T;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          const float* k = qkv + (b * T + j) * C3 + d + h * hd;
          double s = 0.0;
          for (int64_t i = 0; i < hd; ++i) s += double(q[i]) * k[i];
          pre[size_t(j)] = scale * s;
          mx = std::max(mx, pre[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= t; ++j) {
          pre[size_t(j)] = std::exp(pre[size_t(j)] - mx);
          sum += pre[size_t(j)];
        }
        for (int64_t j = 0; j <= t; ++j) pre[size_t(j)] /= sum;
        for (int64_t j = 0; j < T; ++j) p[j] = j <= t ? float(pre[size_t(j)]) : 0.0f;
        // out[b,t,h·hd + i] = Σ_{j<=t} P[t,j]·v_j[i] (the unrounded P)
        float* o = out + (b * T + t) * d + h * hd;
        for (int64_t i = 0; i < hd; ++i) {
          double s = 0.0;
          for (int64_t j = 0; j <= t; ++j) s += pre[size_t(j)] * qkv[(b * T + j) * C3 + 2 * d + h * hd + i];
          o[i] = float(s);
        }
      }
}

void NaiveBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                                      const float* att, int64_t B, int64_t T, int64_t d, int64_t H) {
  // With P = att, dP[t,j] = dout_t·v_j, and for j <= t:
  //   dS[t,j] = scale·P[t,j]·(dP[t,j] - Σ_k P[t,k]·dP[t,k])   (0 for j > t)
  //   dq_t += Σ_j dS[t,j]·k_j   dk_j += Σ_t dS[t,j]·q_t   dv_j += Σ_t P[t,j]·dout_t
  // dS is kept in `scratch` ([B,H,T,T]) between the passes.
  const int64_t hd = d / H, C3 = 3 * d;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> dp(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* P = att + (b * H + h) * T * T;
      float* dS = scratch + (b * H + h) * T * T;
      auto q = [&](int64_t t) { return qkv + (b * T + t) * C3 + h * hd; };
      auto k = [&](int64_t t) { return qkv + (b * T + t) * C3 + d + h * hd; };
      auto v = [&](int64_t t) { return qkv + (b * T + t) * C3 + 2 * d + h * hd; };
      auto g = [&](int64_t t) { return dout + (b * T + t) * d + h * hd; };
      for (int64_t t = 0; t < T; ++t) {
        double dot = 0.0;  // Σ_k P[t,k]·dP[t,k]
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0.0;
          for (int64_t i = 0; i < hd; ++i) s += double(g(t)[i]) * v(j)[i];
          dp[size_t(j)] = s;
          dot += double(P[t * T + j]) * s;
        }
        for (int64_t j = 0; j < T; ++j)
          dS[t * T + j] = j <= t ? float(scale * P[t * T + j] * (dp[size_t(j)] - dot)) : 0.0f;
      }
      for (int64_t t = 0; t < T; ++t) {  // dq_t
        float* dq = dqkv + (b * T + t) * C3 + h * hd;
        for (int64_t i = 0; i < hd; ++i) {
          double s = 0.0;
          for (int64_t j = 0; j <= t; ++j) s += double(dS[t * T + j]) * k(j)[i];
          dq[i] = float(dq[i] + s);
        }
      }
      for (int64_t j = 0; j < T; ++j) {  // dk_j, dv_j
        float* dk = dqkv + (b * T + j) * C3 + d + h * hd;
        float* dv = dqkv + (b * T + j) * C3 + 2 * d + h * hd;
        for (int64_t i = 0; i < hd; ++i) {
          double sk = 0.0, sv = 0.0;
          for (int64_t t = j; t < T; ++t) {
            sk += double(dS[t * T + j]) * q(t)[i];
            sv += double(P[t * T + j]) * g(t)[i];
          }
          dk[i] = float(dk[i] + sk);
          dv[i] = float(dv[i] + sv);
        }
      }
    }
}

// ---- elementwise --------------------------------------------------------------

void NaiveBackend::relu_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void NaiveBackend::relu_backward(float* dinp, const float* dout, const float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (out[i] > 0.0f) dinp[i] += dout[i];
}

void NaiveBackend::relu_backward_inplace(float* d, const float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(out[i] > 0.0f)) d[i] = 0.0f;
}

void NaiveBackend::residual_forward(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// ---- softmax cross-entropy ------------------------------------------------------

double NaiveBackend::crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                                          int64_t N, int64_t V) {
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * V;
    double mx = z[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
    double s = 0.0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - mx);
    for (int64_t v = 0; v < V; ++v) probs[n * V + v] = float(std::exp(z[v] - mx) / s);
    const double loss = std::log(s) + mx - z[targets[n]];  // logsumexp(z) - z[target]
    losses[n] = float(loss);
    total += loss;
  }
  return N > 0 ? total / double(N) : 0.0;
}

void NaiveBackend::crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale,
                                         int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < V; ++v) {
      const double onehot = v == targets[n] ? 1.0 : 0.0;
      dlogits[n * V + v] = float(dlogits[n * V + v] + double(scale) * (probs[n * V + v] - onehot));
    }
}

// ---- parameter initialisation ----------------------------------------------------

void NaiveBackend::init_truncated_normal(float* w, int64_t rows, int64_t row_elems, int64_t row0, double sigma,
                                         uint64_t seed, uint64_t stream) {
  // Row r: its own stream, values drawn in order (rng.hpp defines the draws).
  for (int64_t r = 0; r < rows; ++r) {
    Rng rng = Rng(seed, stream).split(uint64_t(row0 + r));
    for (int64_t i = 0; i < row_elems; ++i) w[r * row_elems + i] = float(sigma * rng.truncated_normal());
  }
}

}  // namespace finemoe::testing
