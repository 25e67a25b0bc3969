// Routing semantics, telemetry, dense equivalence and determinism of the MoE
// layer on one rank.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <numeric>
#include <tuple>

#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"
#include "finemoe/moe.hpp"
#include "moe_ref.hpp"

using namespace finemoe;
using namespace moetest;

// Counts operator new calls so a test can assert that a steady-state step
// allocates nothing through the standard containers. (Buffer<T> uses
// aligned_alloc; its grow-only use is checked by the same test indirectly:
// a reallocation would show up as changed data pointers.)
// (GCC cannot see that new and delete are replaced together here.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<int64_t> g_news{0};
void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// The library's nothrow new (std::stable_sort's temporary buffer uses it) must
// come from malloc too, since the delete below frees everything with free().
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_news.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct LayerRun {
  std::vector<float> out, dx, gwr, gw1, gw2;
  RoutingStats stats;
};

LayerRun run_layer(const Problem& p, bool with_backward = true) {
  auto disp = make_local_dispatcher();
  MoELayer layer(p.s, *disp);
  LayerRun r;
  const MoEWeights w{p.wr.data(), p.w1.data(), p.w2.data()};
  r.out.assign(p.x.size(), 0.0f);
  layer.forward(p.x.data(), r.out.data(), p.T, w);
  r.stats = layer.stats();
  if (with_backward) {
    r.dx.assign(p.x.size(), 0.0f);
    r.gwr.assign(p.wr.size(), 0.0f);
    r.gw1.assign(p.w1.size(), 0.0f);
    r.gw2.assign(p.w2.size(), 0.0f);
    layer.backward(p.dout.data(), r.dx.data(), w, MoEGrads{r.gwr.data(), r.gw1.data(), r.gw2.data()});
  }
  return r;
}

// G = E = 1 with capacity = group: one expert takes every token with weight
// softmax(one logit) = 1, so the layer IS the dense FFN relu(x·W1)·W2.
TEST(MoELayer, DenseEquivalenceWhenEqualsOneExpert) {
  const int64_t d = 16, T = 64;
  MoEShape s = make_shape(d, 1, 1, Routing::expert_choice, /*group=*/32);
  ASSERT_EQ(s.capacity, 32);
  Problem p = make_problem(s, T, 7);
  LayerRun r = run_layer(p);

  // The same GEMMs on the whole batch, as a dense FFN computes them. Bitwise
  // by construction: the one expert's rows are all T tokens in token order,
  // so its grouped GEMM is the same BLAS call (same shapes, same operands) as
  // these, on the same machine and thread count.
  const int64_t dff = 4 * d;
  std::vector<float> h(size_t(T * dff)), y(size_t(T * d));
  backend::gemm(false, false, T, dff, d, 1.0f, p.x.data(), d, p.w1.data(), dff, 0.0f, h.data(), dff);
  for (auto& v : h) v = v > 0 ? v : 0;
  backend::gemm(false, false, T, d, dff, 1.0f, h.data(), dff, p.w2.data(), d, 0.0f, y.data(), d);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(r.out[i], y[i]) << "bitwise at " << i;

  // ... and a plain double loop agrees to fp32 rounding.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < dff; ++j) {
        double a = 0;
        for (int64_t k = 0; k < d; ++k) a += double(p.x[size_t(t * d + k)]) * p.w1[size_t(k * dff + j)];
        acc += (a > 0 ? a : 0) * p.w2[size_t(j * d + i)];
      }
      ASSERT_NEAR(r.out[size_t(t * d + i)], acc, 1e-4 * (1 + std::abs(acc)));
    }
  // Softmax over one expert is constant: the router gets exactly zero gradient.
  for (float g : r.gwr) ASSERT_EQ(g, 0.0f);
  EXPECT_EQ(r.stats.mean_experts_per_token, 1.0);
  EXPECT_EQ(r.stats.unserved_fraction, 0.0);
  EXPECT_NEAR(r.stats.router_entropy, 0.0, 1e-12);
}

// Expert choice: each expert takes exactly c tokens of every group, hence
// mean experts per token = E·G·c/group = G; the output matches the reference.
TEST(MoELayer, ExpertChoiceTakesExactlyCapacityPerGroup) {
  for (int64_t G : {1, 2, 4}) {
    const int64_t d = 8, E = 4, S = 32;
    MoEShape s = make_shape(d, E, G, Routing::expert_choice, S);
    ASSERT_EQ(s.capacity, 8);  // G·32/(4·G)
    for (int64_t groups : {1, 3}) {
      Problem p = make_problem(s, S * groups, 11 + uint64_t(G), 2.0);
      LayerRun r = run_layer(p, false);
      ASSERT_EQ(r.stats.tokens_per_expert.size(), size_t(E * G));
      for (int64_t c : r.stats.tokens_per_expert) EXPECT_EQ(c, s.capacity * groups);
      EXPECT_DOUBLE_EQ(r.stats.mean_experts_per_token, double(G));
      EXPECT_EQ(r.stats.tokens, S * groups);
      RefResult ref = ref_forward(s, p.T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data());
      int64_t unserved = 0;
      for (auto& se : ref.sel) unserved += se.empty();
      EXPECT_DOUBLE_EQ(r.stats.unserved_fraction, double(unserved) / double(p.T));
      for (size_t i = 0; i < r.out.size(); ++i) ASSERT_NEAR(r.out[i], ref.out[i], 2e-5);
    }
  }
}

// Token choice with a large capacity factor: nothing dropped, every token
// served by exactly k = G experts.
TEST(MoELayer, TokenChoiceLargeCapacityServesTopK) {
  for (int64_t G : {1, 2, 4}) {
    const int64_t d = 8, E = 4, T = 48;
    MoEShape s = make_shape(d, E, G, Routing::token_choice, 16, /*cf=*/double(E * G));
    Problem p = make_problem(s, T, 21 + uint64_t(G), 2.0);
    LayerRun r = run_layer(p, false);
    EXPECT_EQ(r.stats.unserved_fraction, 0.0);
    EXPECT_DOUBLE_EQ(r.stats.mean_experts_per_token, double(G));
    EXPECT_EQ(std::accumulate(r.stats.tokens_per_expert.begin(), r.stats.tokens_per_expert.end(), int64_t(0)),
              T * G);
    RefResult ref = ref_forward(s, T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data());
    EXPECT_EQ(ref.dropped, 0);
    for (auto& se : ref.sel) EXPECT_EQ(int64_t(se.size()), G);
    EXPECT_EQ(r.stats.tokens_per_expert, ref.tokens_per_expert);
    for (size_t i = 0; i < r.out.size(); ++i) ASSERT_NEAR(r.out[i], ref.out[i], 2e-5);
  }
}

// Small capacity, hand-made: every token prefers expert 0, top_k = 1, T = 8,
// E·G = 4, cf = 1 -> capacity ceil(8·1/4) = 2: tokens 0 and 1 are served,
// tokens 2..7 dropped (6 of 8 assignments), and their output is exactly 0.
TEST(MoELayer, TokenChoiceDropsByHandCount) {
  const int64_t d = 4, T = 8;
  MoEShape s = make_shape(d, 4, 1, Routing::token_choice, 8, 1.0, 1);
  Problem p = make_problem(s, T, 5);
  for (auto& v : p.x) v = std::abs(v) + 0.1f;  // positive inputs
  std::fill(p.wr.begin(), p.wr.end(), 0.0f);
  for (int64_t i = 0; i < d; ++i) p.wr[size_t(i * 4 + 0)] = 3.0f;  // expert 0 wins everywhere
  LayerRun r = run_layer(p);
  std::vector<int64_t> want(4, 0);
  want[0] = 2;
  EXPECT_EQ(r.stats.tokens_per_expert, want);
  EXPECT_DOUBLE_EQ(r.stats.unserved_fraction, 6.0 / 8.0);
  EXPECT_DOUBLE_EQ(r.stats.mean_experts_per_token, 2.0 / 8.0);
  for (int64_t t = 2; t < T; ++t)
    for (int64_t i = 0; i < d; ++i) {
      EXPECT_EQ(r.out[size_t(t * d + i)], 0.0f);
      EXPECT_EQ(r.dx[size_t(t * d + i)], 0.0f) << "dropped token " << t << " must get no gradient";
    }
  for (int64_t t = 0; t < 2; ++t) {
    double n = 0;
    for (int64_t i = 0; i < d; ++i) n += std::abs(r.out[size_t(t * d + i)]);
    EXPECT_GT(n, 0.0);
  }

  // Random case: the drop fraction equals a count over the reference routing.
  MoEShape s2 = make_shape(8, 4, 2, Routing::token_choice, 16, 0.5);
  Problem p2 = make_problem(s2, 40, 77, 3.0);
  LayerRun r2 = run_layer(p2, false);
  RefResult ref = ref_forward(s2, 40, p2.x.data(), p2.wr.data(), p2.w1.data(), p2.w2.data());
  ASSERT_GT(ref.dropped, 0);
  EXPECT_DOUBLE_EQ(r2.stats.unserved_fraction, double(ref.dropped) / double(40 * 2));
  EXPECT_EQ(r2.stats.tokens_per_expert, ref.tokens_per_expert);
  for (size_t i = 0; i < r2.out.size(); ++i) ASSERT_NEAR(r2.out[i], ref.out[i], 2e-5);
}

// Zero router: uniform probabilities, so every choice is a tie. Expert choice
// gives every expert the first c tokens of each group (lower index wins);
// token choice gives every token experts 0..k-1 (lower id wins), capacity
// permitting. Entropy is log(E·G).
TEST(MoELayer, StatsOnTiesHandCase) {
  const int64_t d = 4, E = 4, G = 2, S = 16, T = 32;
  MoEShape ec = make_shape(d, E, G, Routing::expert_choice, S);
  ASSERT_EQ(ec.capacity, 4);
  Problem p = make_problem(ec, T, 3);
  std::fill(p.wr.begin(), p.wr.end(), 0.0f);
  LayerRun r = run_layer(p, false);
  for (int64_t c : r.stats.tokens_per_expert) EXPECT_EQ(c, 8);  // 4 per group × 2 groups
  EXPECT_DOUBLE_EQ(r.stats.unserved_fraction, 24.0 / 32.0);    // tokens 4..15 of each group
  EXPECT_DOUBLE_EQ(r.stats.mean_experts_per_token, 2.0);
  EXPECT_NEAR(r.stats.router_entropy, std::log(8.0), 1e-6);
  for (int64_t t = 0; t < T; ++t) {
    double n = 0;
    for (int64_t i = 0; i < d; ++i) n += std::abs(r.out[size_t(t * d + i)]);
    if (t % S < 4)
      EXPECT_GT(n, 0.0) << t;
    else
      EXPECT_EQ(n, 0.0) << t;
  }

  // Token choice, k = 3, cf = 1: capacity ceil(32·3/8) = 12; experts 0,1,2 are
  // everyone's choice, each fills after 12 tokens: 3·12 served, 96-36 dropped.
  MoEShape tc = make_shape(d, E, G, Routing::token_choice, S, 1.0, 3);
  Problem q = make_problem(tc, T, 3);
  std::fill(q.wr.begin(), q.wr.end(), 0.0f);
  LayerRun rq = run_layer(q, false);
  // (Built element by element: GCC 12.2 with 512-bit vectors miscompiles the
  // brace-initialised vector {12,12,12,0,0,0,0,0} into eight 12s.)
  std::vector<int64_t> want_tc(8, 0);
  want_tc[0] = want_tc[1] = want_tc[2] = 12;
  EXPECT_EQ(rq.stats.tokens_per_expert, want_tc);
  EXPECT_DOUBLE_EQ(rq.stats.unserved_fraction, 60.0 / 96.0);
  EXPECT_DOUBLE_EQ(rq.stats.mean_experts_per_token, 36.0 / 32.0);
  EXPECT_NEAR(rq.stats.router_entropy, std::log(8.0), 1e-6);
}

// Same inputs -> bit-identical outputs and gradients, whatever the thread count.
TEST(MoELayer, DeterministicAcrossRunsAndThreads) {
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MoEShape s = make_shape(16, 4, 4, routing, 32, 1.0);
    Problem p = make_problem(s, 96, 42, 2.0);
    const int threads = omp_get_max_threads();
    LayerRun a = run_layer(p);
    LayerRun b = run_layer(p);
    omp_set_num_threads(1);
    LayerRun c = run_layer(p);
    omp_set_num_threads(threads);
    for (const LayerRun* o : {&b, &c}) {
      EXPECT_EQ(a.out, o->out);
      EXPECT_EQ(a.dx, o->dx);
      EXPECT_EQ(a.gwr, o->gwr);
      EXPECT_EQ(a.gw1, o->gw1);
      EXPECT_EQ(a.gw2, o->gw2);
      EXPECT_EQ(a.stats.router_entropy, o->stats.router_entropy);
    }
  }
}

// A layer object reused across steps (workspace reuse) gives the same answer
// as a fresh one, including after a step with a different token count.
TEST(MoELayer, WorkspaceReuseAcrossSteps) {
  MoEShape s = make_shape(8, 4, 2, Routing::token_choice, 16, 1.0);
  Problem big = make_problem(s, 64, 1, 2.0), small = make_problem(s, 32, 2, 2.0);
  auto disp = make_local_dispatcher();
  MoELayer layer(s, *disp);
  auto step = [&](const Problem& p) {
    LayerRun r;
    const MoEWeights w{p.wr.data(), p.w1.data(), p.w2.data()};
    r.out.assign(p.x.size(), 0.0f);
    r.dx.assign(p.x.size(), 0.0f);
    r.gwr.assign(p.wr.size(), 0.0f);
    r.gw1.assign(p.w1.size(), 0.0f);
    r.gw2.assign(p.w2.size(), 0.0f);
    layer.forward(p.x.data(), r.out.data(), p.T, w);
    layer.backward(p.dout.data(), r.dx.data(), w, MoEGrads{r.gwr.data(), r.gw1.data(), r.gw2.data()});
    return r;
  };
  step(big);
  LayerRun reused = step(small);
  LayerRun fresh = run_layer(small);
  EXPECT_EQ(reused.out, fresh.out);
  EXPECT_EQ(reused.dx, fresh.dx);
  EXPECT_EQ(reused.gw1, fresh.gw1);
  EXPECT_EQ(reused.gwr, fresh.gwr);
}

// The layers of a model share one scratch workspace per thread (src/moe/
// workspace.hpp) and keep only what backward needs. Interleaving two layers
// as a model does (forward 1, forward 2, backward 2, backward 1), with
// different token counts, must give each layer exactly its stand-alone result.
TEST(MoELayer, LayersSharingScratchInterleaved) {
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MoEShape s = make_shape(16, 4, 4, routing, 32, 1.0);
    Problem p1 = make_problem(s, 128, 21, 2.0), p2 = make_problem(s, 64, 22, 2.0);
    const LayerRun a1 = run_layer(p1), a2 = run_layer(p2);
    auto disp = make_local_dispatcher();
    MoELayer l1(s, *disp), l2(s, *disp);
    LayerRun b1, b2;
    for (auto [r, p] : {std::pair{&b1, &p1}, std::pair{&b2, &p2}}) {
      r->out.assign(p->x.size(), 0.0f);
      r->dx.assign(p->x.size(), 0.0f);
      r->gwr.assign(p->wr.size(), 0.0f);
      r->gw1.assign(p->w1.size(), 0.0f);
      r->gw2.assign(p->w2.size(), 0.0f);
    }
    const MoEWeights w1{p1.wr.data(), p1.w1.data(), p1.w2.data()}, w2{p2.wr.data(), p2.w1.data(), p2.w2.data()};
    l1.forward(p1.x.data(), b1.out.data(), p1.T, w1);
    l2.forward(p2.x.data(), b2.out.data(), p2.T, w2);
    l2.backward(p2.dout.data(), b2.dx.data(), w2, MoEGrads{b2.gwr.data(), b2.gw1.data(), b2.gw2.data()});
    l1.backward(p1.dout.data(), b1.dx.data(), w1, MoEGrads{b1.gwr.data(), b1.gw1.data(), b1.gw2.data()});
    for (auto [a, b] : {std::pair{&a1, &b1}, std::pair{&a2, &b2}}) {
      EXPECT_EQ(a->out, b->out);
      EXPECT_EQ(a->dx, b->dx);
      EXPECT_EQ(a->gwr, b->gwr);
      EXPECT_EQ(a->gw1, b->gw1);
      EXPECT_EQ(a->gw2, b->gw2);
    }
    EXPECT_EQ(l1.stats().router_entropy, a1.stats.router_entropy);
    EXPECT_EQ(l2.stats().router_entropy, a2.stats.router_entropy);
  }
}

// A dispatcher that is not the LocalDispatcher (as the all-to-all one under
// EP > 1) takes the general path: dispatch/combine copies and the experts
// keep their input rows. On one rank with copy semantics it must give the
// local fast path's results bit for bit.
TEST(MoELayer, GeneralDispatcherPathMatchesLocalPath) {
  struct CopyDispatcher final : Dispatcher {  // on the CPU backend: its memory is the host's
    CopyDispatcher() : Dispatcher(cpu_backend()) {}
    int64_t rows = 0;
    void dispatch(const float* send, const std::vector<int64_t>& send_counts, int64_t width,
                  DeviceBuffer<float>& recv, std::vector<int64_t>& recv_counts) override {
      rows = std::accumulate(send_counts.begin(), send_counts.end(), int64_t(0));
      if (recv.size() < rows * width) recv.resize(rows * width);
      std::copy(send, send + rows * width, recv.data());
      recv_counts.assign(send_counts.begin(), send_counts.end());
    }
    void combine(const float* recv_layout, int64_t width, float* send_layout) override {
      std::copy(recv_layout, recv_layout + rows * width, send_layout);
    }
  };
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MoEShape s = make_shape(16, 4, 4, routing, 32, 1.0);
    Problem p = make_problem(s, 96, 31, 2.0);
    const LayerRun a = run_layer(p);
    CopyDispatcher disp;
    MoELayer layer(s, disp);
    LayerRun b;
    const MoEWeights w{p.wr.data(), p.w1.data(), p.w2.data()};
    b.out.assign(p.x.size(), 0.0f);
    b.dx.assign(p.x.size(), 0.0f);
    b.gwr.assign(p.wr.size(), 0.0f);
    b.gw1.assign(p.w1.size(), 0.0f);
    b.gw2.assign(p.w2.size(), 0.0f);
    layer.forward(p.x.data(), b.out.data(), p.T, w);
    layer.backward(p.dout.data(), b.dx.data(), w, MoEGrads{b.gwr.data(), b.gw1.data(), b.gw2.data()});
    EXPECT_EQ(a.out, b.out);
    EXPECT_EQ(a.dx, b.dx);
    EXPECT_EQ(a.gwr, b.gwr);
    EXPECT_EQ(a.gw1, b.gw1);
    EXPECT_EQ(a.gw2, b.gw2);
  }
}

// After a first step has sized the workspace, further steps of the same (or a
// smaller) size make no heap allocation through operator new.
TEST(MoELayer, SteadyStateStepDoesNotAllocate) {
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MoEShape s = make_shape(16, 4, 4, routing, 32, 1.0);
    Problem p = make_problem(s, 128, 9, 2.0);
    auto disp = make_local_dispatcher();
    MoELayer layer(s, *disp);
    std::vector<float> out(p.x.size()), dx(p.x.size()), gwr(p.wr.size()), gw1(p.w1.size()), gw2(p.w2.size());
    const MoEWeights w{p.wr.data(), p.w1.data(), p.w2.data()};
    const MoEGrads g{gwr.data(), gw1.data(), gw2.data()};
    layer.forward(p.x.data(), out.data(), p.T, w);
    layer.backward(p.dout.data(), dx.data(), w, g);
    const int64_t before = g_news.load();
    for (int step = 0; step < 3; ++step) {
      layer.forward(p.x.data(), out.data(), p.T, w);
      layer.backward(p.dout.data(), dx.data(), w, g);
    }
    EXPECT_EQ(g_news.load() - before, 0) << "operator new calls in 3 steady-state steps";
  }
}

// The MoE layer in bf16 (experts' GEMMs; the router stays fp32) against fp32,
// both routings: outputs and gradients within bf16 rounding of the fp32 ones,
// as a relative L2 error. x and W1 are made positive so that every hidden
// pre-activation is clearly positive: otherwise a unit near 0 can switch ReLU
// sides between the precisions, which changes its dh and dW1 entries by O(1)
// (measured with random signs: dW1 3 %, dx 2 %; everything else 0.3 %, the
// same before and after the fused-ReLU change). A large router scale keeps
// the selection away from ties, so both precisions route the same way.
TEST(MoELayer, Bf16AgreesWithFp32WithinBf16Tolerance) {
  if (!backend::bf16_available()) GTEST_SKIP() << "no bf16 GEMM on this CPU";
  auto rel_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
      den += double(b[i]) * double(b[i]);
    }
    return std::sqrt(num / den);
  };
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MoEShape s = make_shape(32, 4, 2, routing, 32, 1.0);
    Problem p = make_problem(s, 64, 5, 2.0);
    for (auto& v : p.x) v = std::fabs(v) + 0.05f;
    for (auto& v : p.w1) v = std::fabs(v);
    backend::set_precision(backend::Precision::fp32);
    LayerRun f32 = run_layer(p);
    backend::set_precision(backend::Precision::bf16);
    LayerRun b16 = run_layer(p);
    backend::set_precision(backend::Precision::fp32);
    EXPECT_EQ(b16.stats.tokens_per_expert, f32.stats.tokens_per_expert);
    for (auto [name, a, b] : {std::tuple{"out", &b16.out, &f32.out}, std::tuple{"dx", &b16.dx, &f32.dx},
                              std::tuple{"dWr", &b16.gwr, &f32.gwr}, std::tuple{"dW1", &b16.gw1, &f32.gw1},
                              std::tuple{"dW2", &b16.gw2, &f32.gw2}}) {
      const double diff = rel_diff(*a, *b);
      std::printf("bf16 vs fp32, routing %d, %s: relative L2 difference %.2e\n", int(routing), name, diff);
      EXPECT_LT(diff, 1e-2) << name << " routing " << int(routing);
      EXPECT_GT(diff, 0.0) << name << " routing " << int(routing) << ": identical, so bf16 did not run";
    }
  }
}

TEST(MoELayer, RejectsBadShapesWithTheKeyName) {
  auto disp = make_local_dispatcher();
  MoEShape s = make_shape(8, 4, 2, Routing::expert_choice, 16);
  s.capacity = 0;
  try {
    MoELayer layer(s, *disp);
    FAIL() << "capacity 0 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("moe.group_size"), std::string::npos) << e.what();
  }
  s = make_shape(8, 4, 2, Routing::expert_choice, 16);
  s.ep_size = 3;
  try {
    MoELayer layer(s, *disp);
    FAIL() << "EP 3 with 8 experts accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.expert_parallel"), std::string::npos) << e.what();
  }
  // Expert choice needs whole groups.
  s = make_shape(8, 4, 2, Routing::expert_choice, 16);
  MoELayer layer(s, *disp);
  Problem p = make_problem(s, 24, 1);
  std::vector<float> out(p.x.size());
  EXPECT_THROW(layer.forward(p.x.data(), out.data(), 24, MoEWeights{p.wr.data(), p.w1.data(), p.w2.data()}),
               Error);
}

}  // namespace
