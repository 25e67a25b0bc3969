// Whole training steps through two backends: the CPU backend (OpenBLAS or
// oneDNN GEMMs, OpenMP loops) and the naive reference backend (plain loops,
// double-accumulated GEMMs). The same orchestration code (Transformer,
// MoELayer, adamw_update) runs on both; only the Backend object differs.
//
// This is the proof that the seam is complete: any computation that model,
// moe or train code did itself instead of asking its Backend would run the
// CPU code in both models, and any kernel the orchestration forgot to route
// through `be` would show up here as soon as the two backends disagree on it.
// A bypass would call the CPU engines directly (model code can still reach
// backend.hpp's gemm functions; the CPU kernels of ops.hpp are private to
// the CPU backend, which the layers check enforces): so the naive model's
// steps must not move backend::gemm_calls(). The naive kernels themselves
// are checked one by one in test_naive_*_kernels.cpp.
//
// Tolerances. The two backends compute the same functions in fp32 with
// different summation orders (the naive GEMMs accumulate in double, the CPU
// engines in fp32 blocks), so every value differs by a few ulps per reduction
// and the differences compound over layers: with K <= 128 terms per dot
// product the per-GEMM relative error is <= K·2^-24 ≈ 8e-6, and a 2-block
// model chains about a dozen of them forward and backward. We therefore ask
//   - loss: relative difference <= 2e-5 per step;
//   - gradients: per tensor, ||g_cpu − g_naive|| <= 1e-4·||g_naive|| + 1e-7
//     (a norm-wise bound: individual tiny entries may differ more in relative
//     terms without meaning anything);
//   - parameters after AdamW (lr 1e-3): max |Δ| <= 2e-5. AdamW's first steps
//     move each weight by about lr·sign(g), so a gradient entry whose sign the
//     two backends disagree on (|g| at the rounding level) could move a
//     weight by up to 2·lr; the bound would catch that, and the measured
//     maximum is far below it (gradients that small are damped by eps: the
//     update is lr·g/(|g|+eps)).
//   - routing: the per-expert selection counts must be identical (a routing
//     decision that flips between backends would make every later comparison
//     meaningless, so it is checked first).
// Three steps per configuration: dense, MoE expert choice, MoE token choice
// with balance loss, z-loss and the selection bias.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../model/model_fixtures.hpp"
#include "finemoe/backend.hpp"
#include "finemoe/device.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/model.hpp"
#include "finemoe/moe.hpp"
#include "finemoe/optimizer.hpp"
#include "naive_backend.hpp"

using namespace finemoe;

namespace {

struct Trainee {
  Config cfg;
  ParamStore store;
  Backend& be;
  std::unique_ptr<Dispatcher> disp;  // on `be`: its rows live in that backend's memory
  std::unique_ptr<Transformer> tf;
  Trainee(const Config& c, Backend& b) : cfg(c), be(b), disp(make_local_dispatcher(b)) {
    declare_parameters(cfg, store);
    store.finalize(be);
    init_parameters(cfg, store, /*seed=*/5, be);
    tf = std::make_unique<Transformer>(cfg, store, *disp, be);
  }
};

void make_batch(std::vector<int32_t>& tok, std::vector<int32_t>& tgt, int64_t B, int64_t T, int64_t V,
                uint64_t seed) {
  std::mt19937_64 rng(seed);
  tok.resize(size_t(B * T));
  tgt.resize(size_t(B * T));
  for (auto& t : tok) t = int32_t(rng() % uint64_t(V));
  for (auto& t : tgt) t = int32_t(rng() % uint64_t(V));
}

double norm(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return std::sqrt(s);
}

void run_steps(const Config& cfg) {
  Trainee cpu(cfg, cpu_backend());
  finemoe::testing::NaiveBackend naive_be;
  Trainee naive(cfg, naive_be);
  const int64_t B = cfg.train.batch_size, T = cfg.model.seq_len, V = cfg.model.vocab_size;
  AdamWParams hp;
  hp.lr = 1e-3;
  std::vector<int32_t> tok, tgt;
  for (int step = 1; step <= 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    make_batch(tok, tgt, B, T, V, 100 + uint64_t(step));
    const int64_t before_cpu = backend::gemm_calls();
    const double la = cpu.tf->forward(tok.data(), tgt.data(), B);
    ASSERT_GT(backend::gemm_calls(), before_cpu) << "the counter must see the CPU model's GEMMs";
    int64_t engine_calls = backend::gemm_calls();
    const double lb = naive.tf->forward(tok.data(), tgt.data(), B);
    EXPECT_EQ(backend::gemm_calls(), engine_calls) << "the naive model's forward called the CPU GEMM engines";
    ASSERT_EQ(cpu.tf->selection_counts(), naive.tf->selection_counts()) << "a routing decision differs";
    EXPECT_NEAR(la, lb, 2e-5 * std::abs(lb)) << "loss";
    EXPECT_NEAR(cpu.tf->aux_loss(), naive.tf->aux_loss(), 2e-5 * std::abs(naive.tf->aux_loss()) + 1e-9);
    cpu.tf->backward(1.0);
    engine_calls = backend::gemm_calls();
    naive.tf->backward(1.0);
    EXPECT_EQ(backend::gemm_calls(), engine_calls) << "the naive model's backward called the CPU GEMM engines";
    for (const ParamInfo& p : cpu.store.params()) {
      const float* ga = cpu.store.grad(p.name);
      const float* gb = naive.store.grad(p.name);
      std::vector<float> diff(size_t(p.local_count));
      for (int64_t i = 0; i < p.local_count; ++i) diff[size_t(i)] = ga[i] - gb[i];
      const double gn = norm(gb, p.local_count);
      EXPECT_LE(norm(diff.data(), p.local_count), 1e-4 * gn + 1e-7) << "gradient of " << p.name << " (norm " << gn
                                                                      << ")";
      EXPECT_GT(gn, 0.0) << p.name << " got no gradient: the comparison would be vacuous";
    }
    AdamWStepOptions opt;
    opt.zero_grads = true;
    adamw_update(cpu.store, hp, step, opt, cpu.be);
    adamw_update(naive.store, hp, step, opt, naive.be);
    if (cfg.moe.bias_update_rate > 0) {
      cpu.tf->update_selection_bias(cpu.tf->selection_counts(), cfg.moe.bias_update_rate);
      naive.tf->update_selection_bias(naive.tf->selection_counts(), cfg.moe.bias_update_rate);
    }
    double worst = 0;
    std::string where;
    for (const ParamInfo& p : cpu.store.params()) {
      const float* wa = cpu.store.param(p.name);
      const float* wb = naive.store.param(p.name);
      for (int64_t i = 0; i < p.local_count; ++i)
        if (std::abs(wa[i] - wb[i]) > worst) {
          worst = std::abs(wa[i] - wb[i]);
          where = p.name + "[" + std::to_string(i) + "]";
        }
    }
    EXPECT_LE(worst, 2e-5) << "largest parameter difference after AdamW at " << where;
  }
}

}  // namespace

TEST(NaiveBackendStep, DenseModelTrainsLikeTheCpuBackend) { run_steps(fmtest::tiny_config("dense")); }

TEST(NaiveBackendStep, MoEExpertChoiceTrainsLikeTheCpuBackend) { run_steps(fmtest::tiny_config("moe")); }

TEST(NaiveBackendStep, MoETokenChoiceWithAuxLossesAndBiasTrainsLikeTheCpuBackend) {
  Config c = fmtest::tiny_config("moe", "token_choice");
  c.moe.balance_loss = 0.01;
  c.moe.z_loss = 1e-3;
  c.moe.bias_update_rate = 1e-3;
  run_steps(c);
}
