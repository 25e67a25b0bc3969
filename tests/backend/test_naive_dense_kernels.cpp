// The dense transformer kernels (and parameter initialisation) of the CPU
// backend against the naive reference backend (naive_dense.cpp), kernel by
// kernel, on random inputs at a few small shapes: T not a multiple of 8, d and
// the head size not multiples of 8, several heads, and T = 130 so that the CPU
// attention's causal row blocks (64 query rows, tail block) are exercised.
//
// Tolerances. The naive kernels sum in double and round once; the CPU kernels
// run fp32 GEMMs (backend precision set to fp32 here), float lane sums and a
// vector exp (about 2 ulp). Each comparison is |cpu - ref| <= atol + rtol·|ref|;
// where values come out of float sums, atol is a multiple of max|ref| of that
// output, so the bound scales with the data rather than with one element. Sums
// here have at most 130 terms of O(1) values: fp32 rounding is ~1e-7
// relative per operation and well under 1e-5 of max|ref| for a whole sum.
// The errors measured (printed per comparison) are at most 0.21 of their
// bound (cross-entropy probs), most under 0.05, while a wrong convention
// (overwrite vs accumulate, a missing scale, the LayerNorm eps on the
// small-variance rows, a perturbed probability) is O(1e-3..1) and fails.
// Kernels that are the same float operations in the same order in both
// backends (embedding, relu, residual, init) must agree exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../model/model_fixtures.hpp"
#include "finemoe/backend.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/model.hpp"
#include "finemoe/params.hpp"
#include "naive_backend.hpp"

namespace {

using finemoe::Backend;
using Vec = std::vector<float>;

struct Shape {
  int64_t B, T, d, H, V;
};
// hd = d/H: 8, 10, 6; d = 24, 20, 12; T = 13, 37, 130.
const Shape kShapes[] = {{2, 13, 24, 3, 50}, {1, 37, 20, 2, 67}, {1, 130, 12, 2, 9}};

std::string name(const Shape& s) {
  return "B" + std::to_string(s.B) + " T" + std::to_string(s.T) + " d" + std::to_string(s.d) + " H" +
         std::to_string(s.H);
}

Vec uniform(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(static_cast<size_t>(n));
  for (float& x : v) x = u(g);
  return v;
}

std::vector<int32_t> ints(int64_t n, int32_t hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int32_t> u(0, hi - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = u(g);
  return v;
}

float max_abs(const Vec& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Every element within atol + rtol·|ref|; one failure line with the worst
// element, and the worst error printed either way.
void expect_close(const std::string& what, const Vec& got, const Vec& ref, double atol, double rtol) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double worst = 0.0, worst_ratio = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(ref[i]));
    const double ratio = err / (atol + rtol * std::fabs(double(ref[i])));
    if (!(ratio <= worst_ratio)) {  // NaN counts as worst
      worst_ratio = ratio;
      worst = err;
      at = i;
    }
  }
  std::printf("  %-40s max err %.3g (%.3f of the bound)\n", what.c_str(), worst, worst_ratio);
  EXPECT_LE(worst_ratio, 1.0) << what << ": element " << at << " cpu " << got[at] << " ref " << ref[at]
                              << " (atol " << atol << ", rtol " << rtol << ")";
}

void expect_equal(const std::string& what, const Vec& got, const Vec& ref) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_EQ(got[i], ref[i]) << what << ": element " << i;  // exact, bit for bit for finite values
}

class NaiveDense : public ::testing::Test {
 protected:
  void SetUp() override { finemoe::backend::set_precision(finemoe::backend::Precision::fp32); }
  Backend& cpu = finemoe::cpu_backend();
  finemoe::testing::NaiveBackend naive;
};

// LayerNorm input rows with their own offset and scale, some with a small
// variance (scale 0.05: var ~1e-3, where the eps 1e-5 changes rstd by ~0.5%).
Vec ln_input(int64_t N, int64_t d, uint32_t seed) {
  Vec x = uniform(N * d, -1.f, 1.f, seed);
  const Vec off = uniform(N, -0.5f, 0.5f, seed + 1), sc = uniform(N, 0.f, 1.f, seed + 2);
  for (int64_t n = 0; n < N; ++n) {
    const float scale = n % 3 == 0 ? 0.05f : 0.5f + 2.5f * sc[size_t(n)];
    for (int64_t i = 0; i < d; ++i) x[size_t(n * d + i)] = off[size_t(n)] + scale * x[size_t(n * d + i)];
  }
  return x;
}

TEST_F(NaiveDense, Embedding) {
  for (const Shape& s : kShapes) {
    const int64_t BT = s.B * s.T;
    const auto tok = ints(BT, int32_t(s.V), 1);
    const Vec wte = uniform(s.V * s.d, -1, 1, 2), wpe = uniform(s.T * s.d, -1, 1, 3);
    Vec oc(size_t(BT * s.d), NAN), on(size_t(BT * s.d), NAN);
    cpu.embedding_forward(oc.data(), tok.data(), wte.data(), wpe.data(), s.B, s.T, s.d);
    naive.embedding_forward(on.data(), tok.data(), wte.data(), wpe.data(), s.B, s.T, s.d);
    expect_equal("embedding_forward " + name(s), oc, on);  // one float add, same operands
    // Backward accumulates onto nonzero gradients; repeated tokens (V small)
    // add into one wte row in row order in both backends: exact.
    const Vec dout = uniform(BT * s.d, -1, 1, 4);
    Vec dwte_c = uniform(s.V * s.d, -1, 1, 5), dwpe_c = uniform(s.T * s.d, -1, 1, 6);
    Vec dwte_n = dwte_c, dwpe_n = dwpe_c;
    cpu.embedding_backward(dwte_c.data(), dwpe_c.data(), dout.data(), tok.data(), s.B, s.T, s.d);
    naive.embedding_backward(dwte_n.data(), dwpe_n.data(), dout.data(), tok.data(), s.B, s.T, s.d);
    expect_equal("embedding_backward dwte " + name(s), dwte_c, dwte_n);
    expect_equal("embedding_backward dwpe " + name(s), dwpe_c, dwpe_n);
    // and it did accumulate: dwpe row 0 = initial + Σ_b dout[b,0]
    const Vec init = uniform(s.T * s.d, -1, 1, 6);
    float expect0 = init[0];
    for (int64_t b = 0; b < s.B; ++b) expect0 += dout[size_t(b * s.T * s.d)];
    EXPECT_EQ(dwpe_n[0], expect0);
  }
}

TEST_F(NaiveDense, LayerNorm) {
  for (const Shape& s : kShapes) {
    const int64_t N = s.B * s.T, d = s.d;
    const Vec x = ln_input(N, d, 10), w = uniform(d, 0.5f, 1.5f, 11), b = uniform(d, -0.5f, 0.5f, 12);
    Vec oc(size_t(N * d), NAN), on = oc, mc(size_t(N), NAN), mn = mc, rc = mc, rn = mc;
    cpu.layernorm_forward(oc.data(), mc.data(), rc.data(), x.data(), w.data(), b.data(), N, d);
    naive.layernorm_forward(on.data(), mn.data(), rn.data(), x.data(), w.data(), b.data(), N, d);
    // mean, rstd: both computed in double and rounded to float once: a few ulp.
    expect_close("layernorm mean " + name(s), mc, mn, 1e-9, 1e-6);
    expect_close("layernorm rstd " + name(s), rc, rn, 0.0, 1e-6);
    // out = (x - mean)·rstd·w + b, four float operations on the CPU, with the
    // cancellation x - mean of |mean| <= 0.5 (about 1e-6 abs at rstd 20).
    expect_close("layernorm out " + name(s), oc, on, 1e-5, 1e-5);

    // Backward from the naive saved statistics (the same inputs for both);
    // gradients start nonzero to check they accumulate. Float row sums of d
    // terms and chunked float column sums over N rows on the CPU.
    const Vec dout = uniform(N * d, -1, 1, 13);
    Vec dic = uniform(N * d, -1, 1, 14), dwc = uniform(d, -1, 1, 15), dbc = uniform(d, -1, 1, 16);
    Vec din = dic, dwn = dwc, dbn = dbc;
    cpu.layernorm_backward(dic.data(), dwc.data(), dbc.data(), dout.data(), x.data(), w.data(), mn.data(),
                           rn.data(), N, d);
    naive.layernorm_backward(din.data(), dwn.data(), dbn.data(), dout.data(), x.data(), w.data(), mn.data(),
                             rn.data(), N, d);
    expect_close("layernorm_backward dinp " + name(s), dic, din, 1e-5 * max_abs(din), 1e-5);
    expect_close("layernorm_backward dw " + name(s), dwc, dwn, 1e-5 * max_abs(dwn), 1e-5);
    expect_close("layernorm_backward db " + name(s), dbc, dbn, 1e-5 * max_abs(dbn), 1e-5);
  }
}

TEST_F(NaiveDense, Linear) {
  for (const Shape& s : kShapes) {
    // N = B·T rows, C = d in, OC = 2d + 3 out (odd); then the FFN's 4d -> d.
    for (const auto& [C, OC] : {std::pair<int64_t, int64_t>{s.d, 2 * s.d + 3}, {4 * s.d, s.d}}) {
      const int64_t N = s.B * s.T;
      const std::string tag = name(s) + " C" + std::to_string(C) + " OC" + std::to_string(OC);
      const Vec x = uniform(N * C, -1, 1, 20), W = uniform(C * OC, -1, 1, 21), b = uniform(OC, -1, 1, 22);
      // fp32 GEMM with K = C <= 96 terms of O(1) against double: ~1e-6 of max|ref|.
      for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
        const std::string bt = tag + (bias ? " bias" : " no bias");
        Vec oc(size_t(N * OC), NAN), on = oc;
        cpu.linear_forward(oc.data(), x.data(), W.data(), bias, N, C, OC);
        naive.linear_forward(on.data(), x.data(), W.data(), bias, N, C, OC);
        expect_close("linear_forward " + bt, oc, on, 1e-5 * max_abs(on), 1e-5);
        Vec rc(size_t(N * OC), NAN), rn = rc;
        cpu.linear_relu_forward(rc.data(), x.data(), W.data(), bias, N, C, OC);
        naive.linear_relu_forward(rn.data(), x.data(), W.data(), bias, N, C, OC);
        expect_close("linear_relu_forward " + bt, rc, rn, 1e-5 * max_abs(rn), 1e-5);
        int64_t zeros = 0;
        for (float v : rn) zeros += v == 0.0f;
        EXPECT_GT(zeros, 0) << "the ReLU clipped nothing";
      }
      // Backward: sums over OC (dinp) and over N <= 130 (dW, db); gradients
      // start nonzero (accumulate); once with dinp and db null.
      const Vec dout = uniform(N * OC, -1, 1, 23);
      Vec dic = uniform(N * C, -1, 1, 24), dWc = uniform(C * OC, -1, 1, 25), dbc = uniform(OC, -1, 1, 26);
      Vec din = dic, dWn = dWc, dbn = dbc;
      cpu.linear_backward(dic.data(), dWc.data(), dbc.data(), dout.data(), x.data(), W.data(), N, C, OC);
      naive.linear_backward(din.data(), dWn.data(), dbn.data(), dout.data(), x.data(), W.data(), N, C, OC);
      expect_close("linear_backward dinp " + tag, dic, din, 1e-5 * max_abs(din), 1e-5);
      expect_close("linear_backward dW " + tag, dWc, dWn, 1e-5 * max_abs(dWn), 1e-5);
      expect_close("linear_backward db " + tag, dbc, dbn, 1e-5 * max_abs(dbn), 1e-5);
      cpu.linear_backward(nullptr, dWc.data(), nullptr, dout.data(), x.data(), W.data(), N, C, OC);
      naive.linear_backward(nullptr, dWn.data(), nullptr, dout.data(), x.data(), W.data(), N, C, OC);
      expect_close("linear_backward dW twice " + tag, dWc, dWn, 1e-5 * max_abs(dWn), 1e-5);
    }
  }
}

TEST_F(NaiveDense, Attention) {
  for (const Shape& s : kShapes) {
    const int64_t B = s.B, T = s.T, d = s.d, H = s.H, BT = B * T;
    // q, k, v in [-2, 2]: scores of std ~1.3, so the softmax rows are far from uniform.
    const Vec qkv = uniform(BT * 3 * d, -2, 2, 30);
    Vec oc(size_t(BT * d), NAN), on = oc, ac(size_t(B * H * T * T), NAN), an = ac;
    cpu.attention_forward(oc.data(), ac.data(), qkv.data(), B, T, d, H);
    naive.attention_forward(on.data(), an.data(), qkv.data(), B, T, d, H);
    // Probabilities: fp32 scores (hd <= 10 terms, ~1e-6 abs) through the
    // vector exp (2 ulp): ~1e-6 relative. Masked entries: exactly 0 in both.
    for (int64_t r = 0; r < B * H * T; ++r)
      for (int64_t j = r % T + 1; j < T; ++j) {
        ASSERT_EQ(ac[size_t(r * T + j)], 0.0f) << "cpu att row " << r << " key " << j;
        ASSERT_EQ(an[size_t(r * T + j)], 0.0f) << "naive att row " << r << " key " << j;
      }
    expect_close("attention_forward att " + name(s), ac, an, 1e-7, 2e-5);
    // out = P·V, float sums of <= T terms: 1e-5 of max|ref|.
    expect_close("attention_forward out " + name(s), oc, on, 1e-5 * max_abs(on), 1e-5);

    // Backward from the naive probabilities; dqkv starts nonzero (accumulate).
    // dS = scale·P·(dP - Σ P·dP) cancels in float on the CPU, then dq, dk, dv
    // are float sums of <= T terms: 2e-5 of max|ref|.
    const Vec dout = uniform(BT * d, -1, 1, 31);
    Vec dc = uniform(BT * 3 * d, -1, 1, 32), dn = dc;
    Vec sc(size_t(B * H * T * T), NAN), sn = sc;  // scratch may hold garbage
    cpu.attention_backward(dc.data(), sc.data(), dout.data(), qkv.data(), an.data(), B, T, d, H);
    naive.attention_backward(dn.data(), sn.data(), dout.data(), qkv.data(), an.data(), B, T, d, H);
    expect_close("attention_backward dqkv " + name(s), dc, dn, 2e-5 * max_abs(dn), 1e-5);
  }
}

TEST_F(NaiveDense, ReluAndResidual) {
  const int64_t n = 1001;
  const Vec x = uniform(n, -1, 1, 40), y = uniform(n, -1, 1, 41), g = uniform(n, -1, 1, 42);
  Vec oc(size_t(n), NAN), on = oc;
  cpu.relu_forward(oc.data(), x.data(), n);
  naive.relu_forward(on.data(), x.data(), n);
  expect_equal("relu_forward", oc, on);
  Vec dc = uniform(n, -1, 1, 43), dn = dc;  // accumulate
  cpu.relu_backward(dc.data(), g.data(), on.data(), n);
  naive.relu_backward(dn.data(), g.data(), on.data(), n);
  expect_equal("relu_backward", dc, dn);
  EXPECT_NE(dn, uniform(n, -1, 1, 43));  // it added something
  Vec ic = g, in = g;  // overwrite in place
  cpu.relu_backward_inplace(ic.data(), on.data(), n);
  naive.relu_backward_inplace(in.data(), on.data(), n);
  expect_equal("relu_backward_inplace", ic, in);
  Vec rc(size_t(n), NAN), rn = rc;
  cpu.residual_forward(rc.data(), x.data(), y.data(), n);
  naive.residual_forward(rn.data(), x.data(), y.data(), n);
  expect_equal("residual_forward", rc, rn);
  EXPECT_EQ(rn[7], x[7] + y[7]);
}

TEST_F(NaiveDense, CrossEntropy) {
  for (const Shape& s : kShapes) {
    const int64_t N = s.B * s.T, V = s.V;
    Vec z = uniform(N * V, -4, 4, 50);
    for (int64_t v = 0; v < V; ++v) z[size_t(V + v)] += 60.f;  // row 1: large logits (max subtraction)
    const auto tgt = ints(N, int32_t(V), 51);
    Vec lc(size_t(N), NAN), ln = lc, pc(size_t(N * V), NAN), pn = pc;
    const double mc = cpu.crossentropy_forward(lc.data(), pc.data(), z.data(), tgt.data(), N, V);
    const double mn = naive.crossentropy_forward(ln.data(), pn.data(), z.data(), tgt.data(), N, V);
    // probs: float exp (<= 1 ulp) times a float reciprocal: a few ulp relative.
    expect_close("crossentropy probs " + name(s), pc, pn, 1e-12, 2e-6);
    // losses = log Σ exp + max - z[t] from float exps summed in double, O(log V):
    // ~1e-7 absolute.
    expect_close("crossentropy losses " + name(s), lc, ln, 1e-6, 1e-6);
    EXPECT_NEAR(mc, mn, 1e-6) << name(s);
    double mean = 0;
    for (float l : ln) mean += l;
    EXPECT_NEAR(mn, mean / double(N), 1e-6) << "mean of the per-row losses";
    // backward: dlogits += scale·(p - onehot), two float roundings on the CPU.
    const float scale = 1.0f / float(N);
    Vec gc = uniform(N * V, -1e-2f, 1e-2f, 52), gn = gc;
    cpu.crossentropy_backward(gc.data(), pn.data(), tgt.data(), scale, N, V);
    naive.crossentropy_backward(gn.data(), pn.data(), tgt.data(), scale, N, V);
    expect_close("crossentropy_backward " + name(s), gc, gn, 1e-6 * max_abs(gn), 1e-6);
  }
}

// fill (the LayerNorm ones and zeros of init_parameters): both backends write
// exactly n copies of the value's bits, -0 and a NaN payload included, at
// unaligned starts and odd lengths, and nothing past n.
TEST_F(NaiveDense, FillIsBitIdentical) {
  uint32_t payload_bits = 0x7fc01234u;  // a quiet NaN with a payload
  float payload_nan;
  std::memcpy(&payload_nan, &payload_bits, sizeof payload_nan);
  const float values[] = {1.0f, 0.0f, -0.0f, -3.25f, 1e-40f, INFINITY, payload_nan};
  for (const float v : values)
    for (const int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(1000), int64_t(70001)})
      for (const int64_t start : {int64_t(0), int64_t(3)}) {
        const int64_t total = start + n + 5;
        Vec c = uniform(total, -1, 1, 61), r = c;
        cpu.fill(c.data() + start, n, v);
        naive.fill(r.data() + start, n, v);
        ASSERT_EQ(std::memcmp(c.data(), r.data(), c.size() * sizeof(float)), 0) << v << " n " << n;
        const Vec before = uniform(total, -1, 1, 61);
        for (int64_t i = 0; i < total; ++i) {
          const bool inside = i >= start && i < start + n;
          ASSERT_EQ(std::memcmp(&c[size_t(i)], inside ? &v : &before[size_t(i)], sizeof(float)), 0)
              << "value " << v << " n " << n << " start " << start << " element " << i;
        }
      }
}

TEST_F(NaiveDense, InitTruncatedNormalIsBitIdentical) {
  // Rows 5..41 of a 96-wide tensor, on 1 and 3 CPU threads: identical bits,
  // inside ±2σ, and not constant.
  const int64_t rows = 37, elems = 96, row0 = 5;
  const double sigma = 0.05;
  Vec wn(size_t(rows * elems), NAN);
  naive.init_truncated_normal(wn.data(), rows, elems, row0, sigma, 1234, 77);
  for (int threads : {1, 3}) {
    finemoe::backend::set_num_threads(threads);
    Vec wc(size_t(rows * elems), NAN);
    cpu.init_truncated_normal(wc.data(), rows, elems, row0, sigma, 1234, 77);
    EXPECT_EQ(std::memcmp(wc.data(), wn.data(), wc.size() * sizeof(float)), 0) << threads << " threads";
  }
  finemoe::backend::set_num_threads(1);
  EXPECT_LE(max_abs(wn), 2.0 * sigma * (1 + 1e-6));
  EXPECT_GT(max_abs(wn), 1.5 * sigma);
  // Row r depends on row0 + r only: rows 1.. of a fill from row0 + 1.
  Vec shifted(size_t((rows - 1) * elems), NAN);
  naive.init_truncated_normal(shifted.data(), rows - 1, elems, row0 + 1, sigma, 1234, 77);
  EXPECT_EQ(std::memcmp(shifted.data(), wn.data() + elems, shifted.size() * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(shifted.data(), wn.data(), size_t(elems) * sizeof(float)), 0);
}

TEST_F(NaiveDense, InitParametersSameOnBothBackends) {
  // Whole models (dense and MoE, experts sharded over 2 ranks): init_parameters
  // through either backend gives the same bits.
  for (const char* ffn : {"dense", "moe"}) {
    const finemoe::Config c = fmtest::tiny_config(ffn);
    finemoe::ParamStore a(2, 1), b(2, 1);
    finemoe::declare_parameters(c, a);
    finemoe::declare_parameters(c, b);
    a.finalize(cpu);  // each store in its backend's memory
    b.finalize(naive);
    finemoe::init_parameters(c, a, 42);  // default backend: the CPU one
    finemoe::init_parameters(c, b, 42, naive);
    for (const auto& p : a.params()) {
      EXPECT_EQ(std::memcmp(a.param(p.name), b.param(p.name), size_t(p.local_count) * sizeof(float)), 0)
          << ffn << " " << p.name;
      if (p.global_shape.size() > 1) {  // the random tensors (1-D ones are constant 0 or 1)
        EXPECT_GT(max_abs(Vec(a.param(p.name), a.param(p.name) + p.local_count)), 0.0f) << p.name;
      }
    }
  }
}

}  // namespace
