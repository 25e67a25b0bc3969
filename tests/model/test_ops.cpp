// Finite-difference gradient checks for every op in finemoe/ops.hpp, plus the
// accumulate-into-gradients convention and a few exact forward values.
//
// Tolerances (fp32 ops, central differences with step h, objective in double):
//   linear-in-input ops (embedding, linear): h = 1e-2, rtol 2e-3
//   smooth nonlinear ops (layernorm, attention, cross-entropy): h = 1e-2, rtol 1e-2
//   relu: inputs kept >= 0.1 away from the kink, h = 1e-3, rtol 1e-3
//   atol 1e-4 everywhere (objective ~ O(1..10), fp32 round-off / (2h) ~ 1e-5..1e-4)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "finemoe/backend.hpp"
#include "backend/cpu/ops.hpp"
#include "gradcheck.hpp"

using namespace finemoe;
using fmtest::check_grad;
using fmtest::dot;
using fmtest::fill_uniform;

namespace {
constexpr float kPrefill = 0.25f;  // gradients start here to check += semantics
std::vector<float> prefilled(int64_t n) { return std::vector<float>(n, kPrefill); }
void unprefill(std::vector<float>& g) {
  for (auto& x : g) x -= kPrefill;
}
}  // namespace

TEST(Ops, Embedding) {
  const int64_t B = 2, T = 5, d = 8, V = 7;
  std::mt19937_64 rng(1);
  std::vector<int32_t> tok = {0, 3, 3, 6, 1, 3, 2, 0, 0, 5};  // repeats on purpose
  std::vector<float> wte(V * d), wpe(T * d), out(B * T * d), R(B * T * d);
  fill_uniform(wte.data(), wte.size(), rng);
  fill_uniform(wpe.data(), wpe.size(), rng);
  fill_uniform(R.data(), R.size(), rng);
  ops::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, d);
  EXPECT_FLOAT_EQ(out[(1 * T + 2) * d + 3], wte[0 * d + 3] + wpe[2 * d + 3]);
  auto dwte = prefilled(V * d), dwpe = prefilled(T * d);
  ops::embedding_backward(dwte.data(), dwpe.data(), R.data(), tok.data(), B, T, d);
  unprefill(dwte);
  unprefill(dwpe);
  auto f = [&] {
    ops::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, d);
    return dot(out.data(), R.data(), out.size());
  };
  EXPECT_EQ(check_grad("embedding.dwte", wte.data(), dwte.data(), fmtest::all_indices(V * d), f, 1e-2f, 2e-3, 1e-4).failed, 0);
  EXPECT_EQ(check_grad("embedding.dwpe", wpe.data(), dwpe.data(), fmtest::all_indices(T * d), f, 1e-2f, 2e-3, 1e-4).failed, 0);
  // Token 4 never occurs: its row must get exactly zero gradient.
  for (int64_t i = 0; i < d; ++i) EXPECT_EQ(dwte[4 * d + i], 0.f);
}

TEST(Ops, LayerNorm) {
  const int64_t N = 6, d = 24;
  std::mt19937_64 rng(2);
  std::vector<float> x(N * d), w(d), b(d), out(N * d), mean(N), rstd(N), R(N * d);
  fill_uniform(x.data(), x.size(), rng, -2.f, 3.f);  // non-zero mean
  fill_uniform(w.data(), d, rng, 0.5f, 1.5f);
  fill_uniform(b.data(), d, rng);
  fill_uniform(R.data(), R.size(), rng);
  ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, d);
  // Forward against a double reference.
  for (int64_t n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < d; ++i) m += x[n * d + i];
    m /= d;
    for (int64_t i = 0; i < d; ++i) v += (x[n * d + i] - m) * (x[n * d + i] - m);
    const double rs = 1.0 / std::sqrt(v / d + 1e-5);
    for (int64_t i = 0; i < d; ++i)
      EXPECT_NEAR(out[n * d + i], (x[n * d + i] - m) * rs * w[i] + b[i], 1e-5);
  }
  auto dx = prefilled(N * d), dw = prefilled(d), db = prefilled(d);
  ops::layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          N, d);
  unprefill(dx);
  unprefill(dw);
  unprefill(db);
  auto f = [&] {
    ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, d);
    return dot(out.data(), R.data(), out.size());
  };
  EXPECT_EQ(check_grad("layernorm.dinp", x.data(), dx.data(), fmtest::all_indices(N * d), f, 1e-2f, 1e-2, 1e-4).failed, 0);
  EXPECT_EQ(check_grad("layernorm.dw", w.data(), dw.data(), fmtest::all_indices(d), f, 1e-2f, 1e-2, 1e-4).failed, 0);
  EXPECT_EQ(check_grad("layernorm.db", b.data(), db.data(), fmtest::all_indices(d), f, 1e-2f, 1e-2, 1e-4).failed, 0);
}

TEST(Ops, Linear) {
  const int64_t N = 5, C = 7, OC = 9;
  std::mt19937_64 rng(3);
  std::vector<float> x(N * C), W(C * OC), b(OC), out(N * OC), R(N * OC);
  fill_uniform(x.data(), x.size(), rng);
  fill_uniform(W.data(), W.size(), rng);
  fill_uniform(b.data(), b.size(), rng);
  fill_uniform(R.data(), R.size(), rng);
  ops::linear_forward(out.data(), x.data(), W.data(), b.data(), N, C, OC);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < OC; ++j) {
      double s = b[j];
      for (int64_t c = 0; c < C; ++c) s += double(x[n * C + c]) * W[c * OC + j];
      EXPECT_NEAR(out[n * OC + j], s, 1e-5);
    }
  auto dx = prefilled(N * C), dW = prefilled(C * OC), db = prefilled(OC);
  ops::linear_backward(dx.data(), dW.data(), db.data(), R.data(), x.data(), W.data(), N, C, OC);
  unprefill(dx);
  unprefill(dW);
  unprefill(db);
  auto f = [&] {
    ops::linear_forward(out.data(), x.data(), W.data(), b.data(), N, C, OC);
    return dot(out.data(), R.data(), out.size());
  };
  EXPECT_EQ(check_grad("linear.dinp", x.data(), dx.data(), fmtest::all_indices(N * C), f, 1e-2f, 2e-3, 1e-4).failed, 0);
  EXPECT_EQ(check_grad("linear.dW", W.data(), dW.data(), fmtest::all_indices(C * OC), f, 1e-2f, 2e-3, 1e-4).failed, 0);
  EXPECT_EQ(check_grad("linear.db", b.data(), db.data(), fmtest::all_indices(OC), f, 1e-2f, 2e-3, 1e-4).failed, 0);

  // No bias, no input gradient: only dW changes.
  ops::linear_forward(out.data(), x.data(), W.data(), nullptr, N, C, OC);
  for (int64_t j = 0; j < OC; ++j) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(x[c]) * W[c * OC + j];
    EXPECT_NEAR(out[j], s, 1e-5);
  }
  std::vector<float> dW2(C * OC, 0.f);
  ops::linear_backward(nullptr, dW2.data(), nullptr, R.data(), x.data(), W.data(), N, C, OC);
  for (int64_t i = 0; i < C * OC; ++i) EXPECT_NEAR(dW2[i], dW[i], 1e-5);
}

TEST(Ops, Attention) {
  const int64_t B = 2, T = 7, d = 16, H = 2;
  std::mt19937_64 rng(4);
  std::vector<float> qkv(B * T * 3 * d), out(B * T * d), att(B * H * T * T), scratch(B * H * T * T), R(B * T * d);
  fill_uniform(qkv.data(), qkv.size(), rng, -1.5f, 1.5f);
  fill_uniform(R.data(), R.size(), rng);
  ops::attention_forward(out.data(), att.data(), qkv.data(), B, T, d, H);
  // Probabilities: rows sum to 1, zero above the diagonal.
  for (int64_t r = 0; r < B * H * T; ++r) {
    const int64_t t = r % T;
    double s = 0;
    for (int64_t j = 0; j < T; ++j) {
      s += att[r * T + j];
      if (j > t) {
        EXPECT_EQ(att[r * T + j], 0.f);
      }
    }
    EXPECT_NEAR(s, 1.0, 1e-5);
  }
  // Forward against a naive double reference.
  const int64_t hd = d / H;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> p(t + 1);
        double mx = -1e300, s = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dotqk = 0;
          for (int64_t i = 0; i < hd; ++i)
            dotqk += double(qkv[(b * T + t) * 3 * d + h * hd + i]) * qkv[(b * T + j) * 3 * d + d + h * hd + i];
          p[j] = dotqk / std::sqrt(double(hd));
          mx = std::max(mx, p[j]);
        }
        for (auto& v : p) s += (v = std::exp(v - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double o = 0;
          for (int64_t j = 0; j <= t; ++j) o += p[j] / s * qkv[(b * T + j) * 3 * d + 2 * d + h * hd + i];
          EXPECT_NEAR(out[(b * T + t) * d + h * hd + i], o, 1e-5);
        }
      }
  auto dqkv = prefilled(qkv.size());
  ops::attention_backward(dqkv.data(), scratch.data(), R.data(), qkv.data(), att.data(), B, T, d, H);
  unprefill(dqkv);
  auto f = [&] {
    ops::attention_forward(out.data(), att.data(), qkv.data(), B, T, d, H);
    return dot(out.data(), R.data(), out.size());
  };
  EXPECT_EQ(check_grad("attention.dqkv", qkv.data(), dqkv.data(), fmtest::all_indices(qkv.size()), f, 1e-2f, 1e-2,
                       1e-4).failed, 0);
}

TEST(Ops, AttentionIsCausal) {
  const int64_t B = 1, T = 9, d = 16, H = 2, tc = 5;
  std::mt19937_64 rng(5);
  std::vector<float> qkv(B * T * 3 * d), out1(B * T * d), out2(B * T * d), att(B * H * T * T);
  fill_uniform(qkv.data(), qkv.size(), rng);
  ops::attention_forward(out1.data(), att.data(), qkv.data(), B, T, d, H);
  for (int64_t i = 0; i < 3 * d; ++i) qkv[tc * 3 * d + i] += 0.7f;  // change position tc's q,k,v
  ops::attention_forward(out2.data(), att.data(), qkv.data(), B, T, d, H);
  for (int64_t t = 0; t < T; ++t) {
    double diff = 0;
    for (int64_t i = 0; i < d; ++i) diff = std::max(diff, double(std::fabs(out1[t * d + i] - out2[t * d + i])));
    if (t < tc) {
      EXPECT_EQ(diff, 0.0) << "position " << t << " saw the future";
    } else {
      EXPECT_GT(diff, 1e-4) << "position " << t << " ignored position " << tc;
    }
  }
}

TEST(Ops, Relu) {
  const int64_t n = 40;
  std::mt19937_64 rng(6);
  std::vector<float> x(n), out(n), R(n);
  fill_uniform(x.data(), n, rng);
  for (auto& v : x) v = v >= 0 ? v + 0.1f : v - 0.1f;  // away from the kink
  fill_uniform(R.data(), n, rng);
  ops::relu_forward(out.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], x[i] > 0 ? x[i] : 0.f);
  auto dx = prefilled(n);
  ops::relu_backward(dx.data(), R.data(), out.data(), n);
  unprefill(dx);
  auto f = [&] {
    ops::relu_forward(out.data(), x.data(), n);
    return dot(out.data(), R.data(), n);
  };
  EXPECT_EQ(check_grad("relu.dinp", x.data(), dx.data(), fmtest::all_indices(n), f, 1e-3f, 1e-3, 1e-4).failed, 0);
  // In-place forward (out == inp) is how the FFN uses it.
  std::vector<float> y = x;
  ops::relu_forward(y.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[i], out[i]);
}

// The fused forms are the same arithmetic: bit-identical to the unfused ops,
// in fp32 and (where available) bf16 (oneDNN's eltwise post-op).
TEST(Ops, LinearReluAndInPlaceReluBackwardMatchUnfused) {
  const int64_t N = 37, C = 24, OC = 50;
  std::mt19937_64 rng(11);
  std::vector<float> x(N * C), W(C * OC), b(OC), dout(N * OC);
  fill_uniform(x.data(), N * C, rng);
  fill_uniform(W.data(), C * OC, rng);
  fill_uniform(b.data(), OC, rng);
  fill_uniform(dout.data(), N * OC, rng);
  std::vector<backend::Precision> precs{backend::Precision::fp32};
  if (backend::bf16_available()) precs.push_back(backend::Precision::bf16);
  for (auto prec : precs) {
    backend::set_precision(prec);
    for (const float* bias : {static_cast<const float*>(nullptr), static_cast<const float*>(b.data())}) {
      std::vector<float> ref(N * OC), fused(N * OC);
      ops::linear_forward(ref.data(), x.data(), W.data(), bias, N, C, OC);
      ops::relu_forward(ref.data(), ref.data(), N * OC);
      ops::linear_relu_forward(fused.data(), x.data(), W.data(), bias, N, C, OC);
      EXPECT_EQ(fused, ref) << "precision " << int(prec) << (bias ? " with bias" : " without bias");
      int64_t zeros = 0;
      for (float v : fused) zeros += v == 0.0f;
      EXPECT_GT(zeros, N * OC / 5);  // the ReLU really clipped something
      EXPECT_LT(zeros, N * OC * 4 / 5);
      std::vector<float> d_ref(N * OC, 0.0f), d_inplace = dout;
      ops::relu_backward(d_ref.data(), dout.data(), fused.data(), N * OC);
      ops::relu_backward_inplace(d_inplace.data(), fused.data(), N * OC);
      EXPECT_EQ(d_inplace, d_ref);
    }
  }
  backend::set_precision(backend::Precision::fp32);
}

// bf16 GEMM inputs (fp32 accumulation) against the fp32 path, per op: the
// difference relative to the output's scale stays within bf16 rounding (8
// significant bits: 2^-9 = 0.2 % per input; we allow 1 %). Gradient checks
// stay on fp32; this is what says the bf16 path computes the same thing.
TEST(Ops, Bf16AgreesWithFp32WithinBf16Tolerance) {
  if (!backend::bf16_available()) GTEST_SKIP() << "no bf16 GEMM on this CPU";
  auto rel_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
      den = std::max(den, std::fabs(double(b[i])));
    }
    return num / den;
  };
  struct Outputs {
    std::vector<float> lin, dlin_in, dlin_w, att_out, dqkv;
  };
  const int64_t N = 64, C = 48, OC = 80, B = 2, T = 40, d = 32, H = 2;
  std::mt19937_64 rng(3);
  std::vector<float> x(N * C), W(C * OC), b(OC), dy(N * OC), qkv(B * T * 3 * d), dout(B * T * d);
  fill_uniform(x.data(), x.size(), rng);
  fill_uniform(W.data(), W.size(), rng);
  fill_uniform(b.data(), b.size(), rng);
  fill_uniform(dy.data(), dy.size(), rng);
  fill_uniform(qkv.data(), qkv.size(), rng, -1.5f, 1.5f);
  fill_uniform(dout.data(), dout.size(), rng);
  auto run = [&](backend::Precision p) {
    backend::set_precision(p);
    Outputs o;
    o.lin.assign(N * OC, 0.f);
    o.dlin_in.assign(N * C, 0.f);
    o.dlin_w.assign(C * OC, 0.f);
    ops::linear_forward(o.lin.data(), x.data(), W.data(), b.data(), N, C, OC);
    ops::linear_backward(o.dlin_in.data(), o.dlin_w.data(), nullptr, dy.data(), x.data(), W.data(), N, C, OC);
    o.att_out.assign(B * T * d, 0.f);
    o.dqkv.assign(qkv.size(), 0.f);
    std::vector<float> att(B * H * T * T), scratch(B * H * T * T);
    ops::attention_forward(o.att_out.data(), att.data(), qkv.data(), B, T, d, H);
    ops::attention_backward(o.dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B, T, d, H);
    return o;
  };
  const Outputs f32 = run(backend::Precision::fp32), b16 = run(backend::Precision::bf16);
  backend::set_precision(backend::Precision::fp32);
  const std::pair<const char*, double> diffs[] = {
      {"linear out", rel_diff(b16.lin, f32.lin)},          {"linear dinp", rel_diff(b16.dlin_in, f32.dlin_in)},
      {"linear dW", rel_diff(b16.dlin_w, f32.dlin_w)},     {"attention out", rel_diff(b16.att_out, f32.att_out)},
      {"attention dqkv", rel_diff(b16.dqkv, f32.dqkv)},
  };
  for (const auto& [name, diff] : diffs) {
    EXPECT_LT(diff, 1e-2) << name;
    EXPECT_GT(diff, 0.0) << name << ": bf16 gave exactly the fp32 result, so it did not run in bf16";
  }
}

TEST(Ops, Residual) {
  std::vector<float> a = {1.f, -2.f, 3.5f}, b = {0.5f, 2.f, -1.f}, out(3);
  ops::residual_forward(out.data(), a.data(), b.data(), 3);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], 0.f);
  EXPECT_EQ(out[2], 2.5f);
}

TEST(Ops, CrossEntropy) {
  const int64_t N = 5, V = 11;
  std::mt19937_64 rng(7);
  std::vector<float> logits(N * V), probs(N * V), losses(N);
  std::vector<int32_t> tgt = {0, 10, 3, 3, 7};
  fill_uniform(logits.data(), logits.size(), rng, -3.f, 3.f);
  const double mean = ops::crossentropy_forward(losses.data(), probs.data(), logits.data(), tgt.data(), N, V);
  double ref_mean = 0;
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(logits[n * V + v]));
    const double l = std::log(s) - logits[n * V + tgt[n]];
    EXPECT_NEAR(losses[n], l, 1e-5);
    ref_mean += l / N;
    for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(probs[n * V + v], std::exp(double(logits[n * V + v])) / s, 1e-6);
  }
  EXPECT_NEAR(mean, ref_mean, 1e-5);
  // Gradient of the mean loss: scale = 1/N.
  auto dl = prefilled(N * V);
  ops::crossentropy_backward(dl.data(), probs.data(), tgt.data(), 1.f / N, N, V);
  unprefill(dl);
  auto f = [&] { return ops::crossentropy_forward(losses.data(), probs.data(), logits.data(), tgt.data(), N, V); };
  EXPECT_EQ(check_grad("crossentropy.dlogits", logits.data(), dl.data(), fmtest::all_indices(N * V), f, 1e-2f, 1e-2,
                       1e-4).failed, 0);
  // Uniform logits give exactly ln(V).
  std::vector<float> zeros(N * V, 0.f);
  EXPECT_NEAR(ops::crossentropy_forward(losses.data(), probs.data(), zeros.data(), tgt.data(), N, V), std::log(double(V)),
              1e-6);
}

// Sequences longer than one 64-row query block: attention computes only the
// causal part of QKᵀ, P·V, dout·Vᵀ and dS·K. Every element must be the same
// sum as in the full [T, T] products (the dropped terms are exact zeros or
// never read), computed here as attention did before; the BLAS may order the
// sum differently for the other shapes, so the comparison has a tolerance
// (reasoning below). att and scratch start as NaN: no unwritten entry may be
// read.
// The softmax pieces against double precision: the vector exp within 3 ulp of
// std::exp over its whole range (0 below -87.3), and the causal softmax rows
// and their backward against a plain double computation, for row lengths
// around the 8-lane blocks.
TEST(Ops, CausalSoftmaxMatchesDoublePrecision) {
  double worst = 0;
  for (float x = 0.0f; x > -87.0f; x = std::nextafter(x - 1e-4f * (1.0f - x), -100.0f)) {
    const double ref = std::exp(double(x)), got = ops::exp_nonpositive(x);
    worst = std::max(worst, std::fabs(got - ref) / ref);
  }
  EXPECT_LT(worst, 3.0 * 5.96e-8) << "max relative error of exp_nonpositive";
  EXPECT_EQ(ops::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(ops::exp_nonpositive(-100.0f), 0.0f);
  EXPECT_EQ(ops::exp_nonpositive(-1e30f), 0.0f);
  for (int64_t T : {1, 7, 8, 9, 17, 33}) {
    const int64_t R = 2 * T;
    std::mt19937_64 rng(T);
    std::vector<float> att(R * T), ds(R * T, 0.0f), dP(R * T);
    fill_uniform(att.data(), att.size(), rng, -6.0f, 6.0f);
    fill_uniform(dP.data(), dP.size(), rng);
    std::vector<float> pre = att;
    ops::causal_softmax_forward(att.data(), R, T);
    ds = dP;
    ops::causal_softmax_backward(ds.data(), att.data(), R, T, 0.7f);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t t = r % T;
      double mx = -1e30, sum = 0, dot = 0;
      for (int64_t j = 0; j <= t; ++j) mx = std::max(mx, double(pre[r * T + j]));
      for (int64_t j = 0; j <= t; ++j) sum += std::exp(double(pre[r * T + j]) - mx);
      for (int64_t j = 0; j <= t; ++j) dot += std::exp(double(pre[r * T + j]) - mx) / sum * dP[r * T + j];
      for (int64_t j = 0; j < T; ++j) {
        const double p = j <= t ? std::exp(double(pre[r * T + j]) - mx) / sum : 0.0;
        const double g = j <= t ? 0.7 * p * (dP[r * T + j] - dot) : 0.0;
        if (j > t) {
          ASSERT_EQ(att[r * T + j], 0.0f) << "masked P, T " << T << " row " << r << " col " << j;
          ASSERT_EQ(ds[r * T + j], 0.0f) << "masked dS, T " << T << " row " << r << " col " << j;
        } else {
          ASSERT_NEAR(att[r * T + j], p, 1e-6 * p + 1e-12) << "P, T " << T << " row " << r << " col " << j;
          ASSERT_NEAR(ds[r * T + j], g, 2e-6) << "dS, T " << T << " row " << r << " col " << j;
        }
      }
    }
  }
}

TEST(Ops, AttentionCausalBlocksMatchFullProducts) {
  for (int64_t T : {130, 200}) {
    const int64_t B = 2, d = 32, H = 2, hd = d / H, C3 = 3 * d, BH = B * H;
    std::mt19937_64 rng(6 + T);
    std::vector<float> qkv(B * T * C3), R(B * T * d), out(B * T * d), att(BH * T * T, NAN), scratch(BH * T * T, NAN);
    fill_uniform(qkv.data(), qkv.size(), rng, -1.5f, 1.5f);
    fill_uniform(R.data(), R.size(), rng);
    ops::attention_forward(out.data(), att.data(), qkv.data(), B, T, d, H);
    auto dqkv = prefilled(qkv.size());
    ops::attention_backward(dqkv.data(), scratch.data(), R.data(), qkv.data(), att.data(), B, T, d, H);

    // The full products.
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<float> ratt(att.size()), rsc(att.size()), rout(out.size());
    auto rdq = prefilled(qkv.size());
    std::vector<int64_t> M(BH, T);
    std::vector<const float*> A(BH), Bp(BH);
    std::vector<float*> C(BH);
    auto run = [&](bool ta, bool tb, int64_t N, int64_t K, float alpha, int64_t lda, int64_t ldb, float beta,
                   int64_t ldc) {
      backend::grouped_gemm(ta, tb, BH, M.data(), N, K, alpha, A.data(), lda, Bp.data(), ldb, beta, C.data(), ldc);
    };
    for (int64_t i = 0; i < BH; ++i) {
      const int64_t b = i / H, h = i % H;
      A[i] = qkv.data() + b * T * C3 + h * hd, Bp[i] = qkv.data() + b * T * C3 + d + h * hd, C[i] = ratt.data() + i * T * T;
    }
    run(false, true, T, hd, scale, C3, C3, 0.f, T);
    ops::causal_softmax_forward(ratt.data(), BH * T, T);  // the same softmax as attention_forward
    for (int64_t i = 0; i < BH; ++i) {
      const int64_t b = i / H, h = i % H;
      A[i] = ratt.data() + i * T * T, Bp[i] = qkv.data() + b * T * C3 + 2 * d + h * hd, C[i] = rout.data() + b * T * d + h * hd;
    }
    run(false, false, hd, T, 1.f, T, C3, 0.f, d);
    for (int64_t i = 0; i < BH; ++i) {  // dP
      const int64_t b = i / H, h = i % H;
      A[i] = R.data() + b * T * d + h * hd, Bp[i] = qkv.data() + b * T * C3 + 2 * d + h * hd, C[i] = rsc.data() + i * T * T;
    }
    run(false, true, T, hd, 1.f, d, C3, 0.f, T);
    for (int64_t i = 0; i < BH; ++i) {  // dV
      const int64_t b = i / H, h = i % H;
      A[i] = ratt.data() + i * T * T, Bp[i] = R.data() + b * T * d + h * hd, C[i] = rdq.data() + b * T * C3 + 2 * d + h * hd;
    }
    run(true, false, hd, T, 1.f, T, d, 1.f, C3);
    ops::causal_softmax_backward(rsc.data(), ratt.data(), BH * T, T, scale);
    for (int64_t i = 0; i < BH; ++i) {  // dQ
      const int64_t b = i / H, h = i % H;
      A[i] = rsc.data() + i * T * T, Bp[i] = qkv.data() + b * T * C3 + d + h * hd, C[i] = rdq.data() + b * T * C3 + h * hd;
    }
    run(false, false, hd, T, 1.f, T, C3, 1.f, C3);
    for (int64_t i = 0; i < BH; ++i) {  // dK
      const int64_t b = i / H, h = i % H;
      A[i] = rsc.data() + i * T * T, Bp[i] = qkv.data() + b * T * C3 + h * hd, C[i] = rdq.data() + b * T * C3 + d + h * hd;
    }
    run(true, false, hd, T, 1.f, T, C3, 1.f, C3);

    // Not bitwise: the blocked products drop only exact zeros, but BLAS
    // kernels choose their blocking (and so the fp32 summation order) from
    // the shapes, and the blocked calls have other shapes (OpenBLAS's
    // SkylakeX kernels gave identical bits, its Zen/Haswell kernels differ in
    // the last bit at T = 130). Reordering a sum of K <= 200 fp32 terms moves
    // it by at most K·u = 1.2e-5 of the sum of |terms|; terms here are up to
    // ~9x the results (logits up to 9 with |q|,|k| <= 1.5) and at most three
    // such products chain (QKᵀ -> softmax -> P·V / dS·K), which stays below
    // 1e-4 of each tensor's largest entry (measured on Zen 2: at most 1.0e-7
    // of it with the Zen kernels, 0 with Sandybridge's). A wrong block bound gives O(1)
    // errors, and a read of the masked half of the NaN-filled buffers a NaN,
    // which fails the comparison.
    auto expect_close = [&](const std::vector<float>& a, const std::vector<float>& b, const char* what) {
      double scale = 0, worst = 0;
      size_t at = 0;
      for (float v : b) scale = std::max(scale, double(std::fabs(v)));
      for (size_t i = 0; i < a.size(); ++i) {
        const double e = std::fabs(double(a[i]) - double(b[i]));
        if (!(e <= worst)) worst = e, at = i;  // NaN sticks
      }
      EXPECT_LE(worst, 1e-4 * scale) << what << ", T " << T << " at " << at << " (scale " << scale << ")";
    };
    expect_close(att, ratt, "att");
    expect_close(out, rout, "out");
    expect_close(dqkv, rdq, "dqkv");
  }
}
