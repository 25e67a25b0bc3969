// Whole-model tests: finite-difference gradient checks (dense, MoE expert
// choice, MoE token choice), causality, loss at init, evaluate/forward
// agreement, the loss_scale and accumulation conventions, buffer reuse.
//
// Gradient-check method (fp32 model, objective = mean loss in double):
//  1. per tensor, a DIRECTIONAL check along v = sign(grad): analytic Σ|g|
//     against [L(p + h·v) - L(p - h·v)] / 2h. High signal-to-noise, it checks
//     every element of every tensor at once.
//  2. per tensor, ELEMENT checks on the 3 largest-|g| entries plus 3 random ones.
//  Pass: |a - n| <= atol + rtol·max(|a|, |n|) with rtol = 2e-2, atol = 2e-4 (dense),
//  h = 1e-2 for the directional check (step per element; 5e-3 for elements).
//  MoE routing is piecewise: a step can move a token across an expert's
//  capacity boundary (or a ReLU across 0), which makes the loss jump. A check
//  whose central differences at h and h/2 disagree by more than the tolerance
//  is counted as "non-smooth" and skipped; at most 10 % of checks may be skipped.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "finemoe/error.hpp"
#include "finemoe/model.hpp"
#include "finemoe/moe.hpp"
#include "model_fixtures.hpp"

using namespace finemoe;

namespace {

struct Model {
  Config cfg;
  ParamStore store;
  std::unique_ptr<Dispatcher> disp = make_local_dispatcher();
  std::unique_ptr<Transformer> tf;
  explicit Model(const Config& c, uint64_t seed = 11, bool jitter = false) : cfg(c) {
    declare_parameters(cfg, store);
    store.finalize(cpu_backend());
    init_parameters(cfg, store, seed);
    if (jitter) {
      // Move LayerNorm gains/biases and attention biases off their (symmetric)
      // init values, so their gradients are not special cases.
      std::mt19937_64 rng(seed);
      std::uniform_real_distribution<float> u(-0.2f, 0.2f);
      for (const auto& p : store.params())
        if (p.global_shape.size() == 1) {
          float* w = store.param(p.name);
          for (int64_t i = 0; i < p.local_count; ++i) w[i] += u(rng);
        }
    }
    tf = std::make_unique<Transformer>(cfg, store, *disp);
  }
};

void make_batch(std::vector<int32_t>& tok, std::vector<int32_t>& tgt, int64_t B, int64_t T, int64_t V,
                uint64_t seed) {
  std::mt19937_64 rng(seed);
  tok.resize(B * T);
  tgt.resize(B * T);
  for (auto& t : tok) t = int32_t(rng() % V);
  for (int64_t i = 0; i < B * T; ++i) tgt[i] = i % T + 1 < T ? tok[i + 1] : int32_t(rng() % V);
}

struct GradStats {
  int checks = 0, failed = 0, skipped = 0;
  double max_rel_dir = 0, max_rel_elem = 0;  // over passing checks with max(|a|,|n|) > 50·atol
  std::string worst_dir, worst_elem;
  std::vector<std::string> skipped_names;
};

// One FD comparison. `set(delta)` moves the parameters by delta (along the
// direction), `f()` evaluates the loss. Uses f(-h), f(0), f(+h):
//   pass      the central difference matches the analytic value;
//   skipped   otherwise, if the loss is visibly not linear on [-h, h] (the
//             one-sided slopes disagree by more than the tolerance): a ReLU
//             kink or a routing flip inside the step. Skips are counted and
//             bounded by the callers (a wrong formula fails nearly every
//             check, not a few), and the smooth-routing test allows almost none;
//   failed    the central difference disagrees although the loss is linear
//             on [-h, h] to within the tolerance.
template <class Set, class F>
void fd_check(GradStats& st, const std::string& what, double analytic, float h, double rtol, double atol, Set set,
              F f, double f0, bool directional, bool report) {
  set(h);
  const double fp = f();
  set(-2.0 * h);
  const double fm = f();
  set(h);  // callers restore the exact original values afterwards
  const double central = (fp - fm) / (2.0 * h), fwd = (fp - f0) / h, bwd = (f0 - fm) / h;
  ++st.checks;
  if (std::getenv("FINEMOE_GRADCHECK_VERBOSE"))
    std::printf("    %-36s h=%.2e analytic=%+.6e central=%+.6e fwd=%+.6e bwd=%+.6e\n", what.c_str(), h, analytic,
                central, fwd, bwd);
  const auto tol = [&](double a, double b) { return atol + rtol * std::max(std::fabs(a), std::fabs(b)); };
  const double err = std::fabs(analytic - central), mag = std::max(std::fabs(analytic), std::fabs(central));
  if (err <= tol(analytic, central)) {
      // Relative error is reported where the gradient is well above the fp32
    // noise floor of the differences (~1e-5 for single elements).
    if (mag > 50 * atol) {
      double& worst = directional ? st.max_rel_dir : st.max_rel_elem;
      std::string& where = directional ? st.worst_dir : st.worst_elem;
      if (err / mag > worst) {
        worst = err / mag;
        where = what;
      }
    }
    return;
  }
  const double lo = std::min(fwd, bwd), hi = std::max(fwd, bwd);
  if (hi - lo > tol(fwd, bwd)) {
    ++st.skipped;
    st.skipped_names.push_back(what);
    return;
  }
  ++st.failed;
  if (report)
    ADD_FAILURE() << what << ": analytic " << analytic << " vs central difference " << central << " (one-sided "
                << bwd << ", " << fwd << "; h = " << h << ")";
}

constexpr double kDirLossChange = 5e-4;

// `corrupt`, if given, edits the analytic gradients before the comparison (to
// show that the check catches a wrong gradient); its failures are counted,
// not reported.
GradStats check_model_gradients(Model& m, int64_t B, double rtol, double atol, float h_dir_max, float h_elem,
                                const std::function<void(ParamStore&)>& corrupt = {}) {
  const int64_t T = m.cfg.model.seq_len, V = m.cfg.model.vocab_size;
  std::vector<int32_t> tok, tgt;
  make_batch(tok, tgt, B, T, V, 3);
  m.store.zero_grads();
  m.tf->forward(tok.data(), tgt.data(), B);
  m.tf->backward(1.0);
  if (corrupt) corrupt(m.store);
  const bool report = !corrupt;
  // The objective backward() differentiates: mean cross-entropy plus the
  // auxiliary router losses (0 unless moe.balance_loss / moe.z_loss are on;
  // token choice has balance_loss 0.01 by default).
  auto f = [&] {
    const double ce = m.tf->evaluate(tok.data(), tgt.data(), B);
    return ce + m.tf->aux_loss();
  };
  const double f0 = f();
  GradStats st;
  std::mt19937_64 rng(17);
  for (const ParamInfo& p : m.store.params()) {
    float* w = m.store.param(p.name);
    const std::vector<float> g(m.store.grad(p.name), m.store.grad(p.name) + p.local_count);
    const std::vector<float> orig(w, w + p.local_count);
    // 1. directional derivative along sign(g).
    double gv = 0;
    for (float x : g) gv += std::fabs(x);
    auto set_dir = [&](double delta) {
      for (int64_t i = 0; i < p.local_count; ++i)
        w[i] = float(double(w[i]) + delta * (g[i] > 0 ? 1.0 : (g[i] < 0 ? -1.0 : 0.0)));
    };
    // Step so that the loss moves by about kDirLossChange: far above fp32
    // noise (~1e-6), yet each element moves as little as possible (fewer
    // ReLU kinks / routing boundaries crossed).
    const float h = float(std::clamp(kDirLossChange / std::max(gv, 1e-30), 1e-5, double(h_dir_max)));
    fd_check(st, p.name + " (direction)", gv, h, rtol, atol, set_dir, f, f0, true, report);
    std::copy(orig.begin(), orig.end(), w);
    // 2. element checks: 3 largest |g| and 3 random.
    std::vector<int64_t> idx(p.local_count);
    for (int64_t i = 0; i < p.local_count; ++i) idx[i] = i;
    const int64_t top = std::min<int64_t>(3, p.local_count);
    std::partial_sort(idx.begin(), idx.begin() + top, idx.end(),
                      [&](int64_t a, int64_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
    std::vector<int64_t> pick(idx.begin(), idx.begin() + top);
    for (int k = 0; k < 3; ++k) pick.push_back(int64_t(rng() % p.local_count));
    for (int64_t i : pick) {
      auto set_el = [&](double delta) { w[i] = float(double(w[i]) + delta); };
      fd_check(st, p.name + "[" + std::to_string(i) + "]", g[i], h_elem, rtol, atol, set_el, f, f0, false, report);
      w[i] = orig[i];
    }
  }
  std::printf("  model gradcheck %s %s%s: %d checks, %d failed, %d non-smooth skipped (rtol %.0e, atol %.0e)\n"
              "    max rel err directional %.3e (%s), element %.3e (%s)\n",
              config_name(m.cfg.model.ffn).c_str(), m.cfg.dense() ? "" : config_name(m.cfg.moe.routing).c_str(),
              m.cfg.dense() || m.cfg.moe.output_norm ? "" : " (no moe.norm)", st.checks, st.failed,
              st.skipped, rtol, atol, st.max_rel_dir, st.worst_dir.c_str(), st.max_rel_elem, st.worst_elem.c_str());
  return st;
}

}  // namespace

TEST(Transformer, GradCheckDense) {
  Model m(fmtest::tiny_config("dense"), 11, true);
  const GradStats st = check_model_gradients(m, 2, 2e-2, 2e-5, 3e-4f, 1e-3f);
  EXPECT_EQ(st.failed, 0);
  EXPECT_LE(st.skipped, st.checks / 10);
  EXPECT_LT(st.max_rel_dir, 2e-2);
}

// The checker is not vacuous: a 5 % error in one tensor's gradient, or a
// single wrong element, is caught.
TEST(Transformer, GradCheckCatchesWrongGradients) {
  Model m(fmtest::tiny_config("dense"), 11, true);
  const GradStats scaled = check_model_gradients(m, 2, 2e-2, 2e-5, 3e-4f, 1e-3f, [](ParamStore& s) {
    const ParamInfo& p = s.info("blocks.1.attn.qkv.w");
    for (int64_t i = 0; i < p.local_count; ++i) s.grad(p.name)[i] *= 1.05f;
  });
  EXPECT_GE(scaled.failed, 2);  // the directional check and the largest elements
  const GradStats flipped = check_model_gradients(m, 2, 2e-2, 2e-5, 3e-4f, 1e-3f, [](ParamStore& s) {
    float* g = s.grad("blocks.0.ffn.proj.w");
    const int64_t n = s.info("blocks.0.ffn.proj.w").local_count;
    int64_t top = 0;
    for (int64_t i = 1; i < n; ++i)
      if (std::fabs(g[i]) > std::fabs(g[top])) top = i;
    g[top] = -g[top];  // largest element gets the wrong sign
  });
  EXPECT_GE(flipped.failed, 1);  // caught by the element check (too small for the directional one)
}

TEST(Transformer, GradCheckMoEExpertChoice) {
  Model m(fmtest::tiny_config("moe", "expert_choice"), 12, true);
  const GradStats st = check_model_gradients(m, 4, 2e-2, 2e-5, 3e-4f, 1e-3f);
  EXPECT_EQ(st.failed, 0);
  EXPECT_LE(st.skipped, st.checks / 10);
}

TEST(Transformer, GradCheckMoETokenChoice) {
  Model m(fmtest::tiny_config("moe", "token_choice"), 13, true);
  const GradStats st = check_model_gradients(m, 4, 2e-2, 2e-5, 3e-4f, 1e-3f);
  EXPECT_EQ(st.failed, 0);
  EXPECT_LE(st.skipped, st.checks / 10);
}

// The auxiliary router losses through the whole model (their gradient reaches
// every tensor below the router through x), with coefficients far above the
// defaults so that they dominate the router's gradient, and a non-zero
// selection bias (which changes the selection, not the differentiable path).
// Same tolerances as the CE-only checks: the aux terms are smooth functions of
// the router logits, so nothing in them needs more slack.
TEST(Transformer, GradCheckMoETokenChoiceAuxLosses) {
  Config c = fmtest::tiny_config("moe", "token_choice");
  c.moe.balance_loss = 0.5;
  c.moe.z_loss = 0.05;
  Model m(c, 15, true);
  ASSERT_TRUE(m.store.has_buffer("blocks.0.moe.router.bias"));
  for (int l = 0; l < 2; ++l) {
    float* b = m.store.buffer("blocks." + std::to_string(l) + ".moe.router.bias");
    for (int64_t i = 0; i < c.n_experts(); ++i) b[i] = 0.03f * float((i * 5 + l) % 7 - 3);
  }
  std::vector<int32_t> tok, tgt;
  make_batch(tok, tgt, 4, c.model.seq_len, c.model.vocab_size, 3);
  m.tf->evaluate(tok.data(), tgt.data(), 4);
  EXPECT_GT(m.tf->aux_loss(), 0.5) << "balance >= 1 per block: the aux term must be a real part of the objective";
  const GradStats st = check_model_gradients(m, 4, 2e-2, 2e-5, 3e-4f, 1e-3f);
  EXPECT_EQ(st.failed, 0);
  EXPECT_LE(st.skipped, st.checks / 10);
}

// forward()/evaluate() return the cross-entropy alone whatever the aux
// coefficients (the logged loss and the final evaluation the law is fitted
// on); aux_loss() reports the rest, and only the gradient sees both.
TEST(Transformer, LossIsCrossEntropyAloneAuxReportedApart) {
  Config off = fmtest::tiny_config("moe", "token_choice");
  off.moe.balance_loss = 0.0;
  Config on = off;
  on.moe.balance_loss = 0.3;
  on.moe.z_loss = 0.02;
  Model a(off, 21, true), b(on, 21, true);
  std::vector<int32_t> tok, tgt;
  make_batch(tok, tgt, 4, off.model.seq_len, off.model.vocab_size, 5);
  const double fa = a.tf->forward(tok.data(), tgt.data(), 4), fb = b.tf->forward(tok.data(), tgt.data(), 4);
  EXPECT_EQ(fa, fb) << "forward() is the cross-entropy alone";
  EXPECT_EQ(a.tf->aux_loss(), 0.0);
  const double aux = b.tf->aux_loss();
  EXPECT_GT(aux, 0.3) << "0.3 x balance (about 1 per block) + 0.02 x z";
  // The statistics behind it, per block: aux = Σ 0.3·balance + 0.02·z.
  double sum = 0;
  for (const RoutingStats& st : b.tf->routing_stats()) sum += 0.3 * st.balance_loss + 0.02 * st.z_loss;
  EXPECT_NEAR(aux, sum, 1e-12 * aux);
  a.tf->backward(1.0);
  b.tf->backward(1.0);
  // Only the router's gradient (and what flows back from it) changes.
  const float* ga = a.store.grad("blocks.1.moe.router.w");
  const float* gb = b.store.grad("blocks.1.moe.router.w");
  double diff = 0;
  for (int64_t i = 0; i < a.store.info("blocks.1.moe.router.w").local_count; ++i) diff += std::fabs(ga[i] - gb[i]);
  EXPECT_GT(diff, 1e-3);
  EXPECT_EQ(std::memcmp(a.store.grad("head.w"), b.store.grad("head.w"),
                        size_t(a.store.info("head.w").local_count) * sizeof(float)),
            0)
      << "layers above the last router see the cross-entropy only";
  EXPECT_EQ(a.tf->evaluate(tok.data(), tgt.data(), 4), b.tf->evaluate(tok.data(), tgt.data(), 4));
}

// With capacity = group size (E = 1: every expert takes every token) or
// top_k = all experts without drops, routing selects nothing and the MoE
// output Σ_e p_e·y_e is smooth: every check, the router's directional ones
// included, must then be resolved (not skipped) and pass.
TEST(Transformer, GradCheckMoESmoothRouting) {
  struct Case {
    const char* routing;
    bool norm;
  };
  for (const Case cs : {Case{"expert_choice", true}, Case{"token_choice", true}, Case{"expert_choice", false}}) {
    const std::string routing = std::string(cs.routing) + (cs.norm ? "" : " (no moe.norm)");
    Config c = fmtest::tiny_config("moe", cs.routing);
    c.moe.output_norm = cs.norm;
    c.moe.experts = 1;
    c.moe.granularity = 4;
    c.moe.top_k = 4;
    c.moe.capacity_factor = 1.0;
    ASSERT_EQ(c.expert_capacity(), c.moe.group_size);
    Model m(c, 14, true);
    const GradStats st = check_model_gradients(m, 4, 2e-2, 2e-5, 3e-4f, 1e-3f);
    EXPECT_EQ(st.failed, 0) << routing;
    EXPECT_LE(st.skipped, 2) << routing;
    for (const auto& n : st.skipped_names) EXPECT_EQ(n.find("router"), std::string::npos) << routing << ": " << n;
  }
}

// The ops split reductions by columns, never by rows, so gradients must not
// depend on the OpenMP thread count (the tests otherwise run on one thread).
TEST(Transformer, ThreadCountDoesNotChangeResults) {
  for (const char* ffn : {"dense", "moe"}) {
    Model m(fmtest::tiny_config(ffn), 61, true);
    std::vector<int32_t> tok, tgt;
    make_batch(tok, tgt, 4, m.cfg.model.seq_len, m.cfg.model.vocab_size, 8);
    std::vector<std::vector<float>> grads;
    std::vector<double> losses;
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      m.store.zero_grads();
      losses.push_back(m.tf->forward(tok.data(), tgt.data(), 4));
      m.tf->backward(1.0);
      std::vector<float> g;
      for (int c = 0; c < kNumParamClasses; ++c) {
        const auto& b = m.store.grads(ParamClass(c));
        g.insert(g.end(), b.data(), b.data() + b.size());
      }
      grads.push_back(std::move(g));
    }
    omp_set_num_threads(saved);
    EXPECT_NEAR(losses[0], losses[1], 1e-12) << ffn;  // only the loss sum's order may differ
    ASSERT_EQ(grads[0].size(), grads[1].size());
    size_t differ = 0;
    for (size_t i = 0; i < grads[0].size(); ++i) differ += grads[0][i] != grads[1][i];
    EXPECT_EQ(differ, 0u) << ffn << ": gradients depend on the thread count";
  }
}

TEST(Transformer, LossAtInitIsNearLnV) {
  for (const char* ffn : {"dense", "moe"}) {
    Config c = fmtest::tiny_config(ffn);
    c.model.vocab_size = 512;
    c.model.d_model = 64;
    c.model.head_dim = 32;
    Model m(c, 21);
    std::vector<int32_t> tok, tgt;
    make_batch(tok, tgt, 4, c.model.seq_len, c.model.vocab_size, 5);
    const double loss = m.tf->forward(tok.data(), tgt.data(), 4);
    std::printf("  %s loss at init %.4f, ln V = %.4f\n", ffn, loss, std::log(512.0));
    // Logits at init have variance ≈ 0.1·0.88² ≈ 0.08, which adds ≈ 0.04 nats.
    EXPECT_NEAR(loss, std::log(512.0), 0.1) << ffn;
    EXPECT_GT(loss, std::log(512.0) - 0.02) << ffn;
  }
}

TEST(Transformer, DenseModelIsCausal) {
  Config c = fmtest::tiny_config("dense");
  Model m(c, 31);
  const int64_t B = 2, T = c.model.seq_len, tc = 5;
  std::vector<int32_t> tok, tgt;
  make_batch(tok, tgt, B, T, c.model.vocab_size, 9);
  m.tf->forward(tok.data(), tgt.data(), B);
  std::vector<float> before, after;
  m.tf->token_losses(before);
  ASSERT_EQ(int64_t(before.size()), B * T);
  // Change a future token (and the targets from there on) in both sequences.
  for (int64_t b = 0; b < B; ++b) {
    tok[b * T + tc] = (tok[b * T + tc] + 7) % int32_t(c.model.vocab_size);
    for (int64_t t = tc; t < T; ++t) tgt[b * T + t] = (tgt[b * T + t] + 3) % int32_t(c.model.vocab_size);
  }
  m.tf->forward(tok.data(), tgt.data(), B);
  m.tf->token_losses(after);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float diff = std::fabs(after[b * T + t] - before[b * T + t]);
      if (t < tc) {
        EXPECT_LE(diff, 1e-6f * std::fabs(before[b * T + t])) << "position " << t << " depends on position " << tc;
      } else {
        EXPECT_GT(diff, 1e-5f) << "position " << t << " ignores its changed input";
      }
    }
}

TEST(Transformer, ConventionsAndBufferReuse) {
  Model m(fmtest::tiny_config("dense"), 41);
  const int64_t T = m.cfg.model.seq_len, V = m.cfg.model.vocab_size;
  std::vector<int32_t> tok, tgt, tok4, tgt4;
  make_batch(tok, tgt, 2, T, V, 1);
  make_batch(tok4, tgt4, 4, T, V, 2);
  auto& G = m.store.grads(ParamClass::replicated);

  m.store.zero_grads();
  const double l1 = m.tf->forward(tok.data(), tgt.data(), 2);
  m.tf->backward(1.0);
  const std::vector<float> g1(G.data(), G.data() + G.size());
  double gnorm = 0;
  for (float x : g1) gnorm += double(x) * x;
  EXPECT_GT(gnorm, 0.0);

  // Mean of token_losses is the returned loss.
  double s = 0;
  std::vector<float> losses;
  m.tf->token_losses(losses);
  ASSERT_EQ(int64_t(losses.size()), 2 * T);
  for (float l : losses) s += l;
  EXPECT_NEAR(s / (2 * T), l1, 1e-5);

  // evaluate() gives the same loss and does not disturb a later forward/backward.
  EXPECT_NEAR(m.tf->evaluate(tok.data(), tgt.data(), 2), l1, 1e-6);
  // A larger batch grows the buffers; going back to B = 2 reproduces l1 and g1.
  m.tf->forward(tok4.data(), tgt4.data(), 4);
  m.store.zero_grads();
  EXPECT_DOUBLE_EQ(m.tf->forward(tok.data(), tgt.data(), 2), l1);
  // loss_scale scales the gradient; a second backward accumulates.
  m.tf->backward(0.5);
  m.tf->forward(tok.data(), tgt.data(), 2);
  m.tf->backward(1.5);
  for (size_t i = 0; i < g1.size(); ++i) ASSERT_NEAR(G.data()[i], 2.0f * g1[i], 1e-5f + 1e-4f * std::fabs(g1[i])) << i;

  // backward after evaluate() (no saved activations) is an error, not garbage.
  m.tf->evaluate(tok.data(), tgt.data(), 2);
  EXPECT_THROW(m.tf->backward(1.0), Error);
  // Tokens outside the vocabulary are rejected with a DataError.
  tok[3] = int32_t(V);
  EXPECT_THROW(m.tf->forward(tok.data(), tgt.data(), 2), DataError);
}

TEST(Transformer, MoERoutingStatsPerBlock) {
  Model m(fmtest::tiny_config("moe"), 51);
  std::vector<int32_t> tok, tgt;
  make_batch(tok, tgt, 4, m.cfg.model.seq_len, m.cfg.model.vocab_size, 4);
  m.tf->forward(tok.data(), tgt.data(), 4);
  const auto st = m.tf->routing_stats();
  ASSERT_EQ(st.size(), 2u);
  for (const auto& s : st) {
    EXPECT_EQ(s.tokens, 32);
    ASSERT_EQ(s.tokens_per_expert.size(), 8u);
    int64_t total = 0;
    for (int64_t n : s.tokens_per_expert) total += n;
    EXPECT_EQ(total, 2 * 8 * 4);  // expert choice: 2 groups × 8 experts × capacity 4
  }
}
