// Finite-difference gradient checks of the whole MoE layer (router, experts,
// dispatcher, combine) with respect to x, the router, W1 and W2.
//
// The layer is piecewise smooth: the top-c / top-k selection and the experts'
// ReLUs switch at boundaries. A probe whose ±h perturbation crosses one is not
// a valid finite difference, so each probe first asks the double-precision
// reference whether the selection and ReLU pattern are identical at x+h and
// x−h, and is skipped (counted) if not. The test requires most probes to be
// valid, so it cannot pass by skipping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>

#include "finemoe/moe.hpp"
#include "moe_ref.hpp"

using namespace finemoe;
using namespace moetest;

namespace {

struct GradCase {
  Routing routing;
  int64_t G;
};

void PrintTo(const GradCase& c, std::ostream* os) {
  *os << (c.routing == Routing::expert_choice ? "expert_choice" : "token_choice") << " G=" << c.G;
}

std::string name_of(const testing::TestParamInfo<GradCase>& info) {
  return std::string(info.param.routing == Routing::expert_choice ? "ExpertChoice" : "TokenChoice") + "_G" +
         std::to_string(info.param.G);
}

class MoEGradCheck : public testing::TestWithParam<GradCase> {};

TEST_P(MoEGradCheck, MatchesFiniteDifferences) {
  const auto [routing, G] = GetParam();
  const int64_t d = 8, E = 4, T = 32;
  // Token choice with capacity factor 1: some assignments drop, which the
  // gradient must respect too.
  MoEShape s = make_shape(d, E, G, routing, /*group=*/16, /*cf=*/1.0);
  Problem p = make_problem(s, T, 1234 + uint64_t(G) * 7 + (routing == Routing::token_choice), 2.0);

  auto dispatcher = make_local_dispatcher();
  MoELayer layer(s, *dispatcher);
  std::vector<float> out(size_t(T * d)), dx(size_t(T * d), 0.0f);
  std::vector<float> gwr(p.wr.size(), 0.0f), gw1(p.w1.size(), 0.0f), gw2(p.w2.size(), 0.0f);
  auto weights = [&] { return MoEWeights{p.wr.data(), p.w1.data(), p.w2.data()}; };
  layer.forward(p.x.data(), out.data(), T, weights());
  layer.backward(p.dout.data(), dx.data(), weights(), MoEGrads{gwr.data(), gw1.data(), gw2.data()});

  // The layer's forward agrees with the independent reference.
  RefResult base = ref_forward(s, T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], base.out[i], 2e-5) << "out[" << i << "]";
  if (routing == Routing::token_choice) {
    EXPECT_GT(base.dropped, 0) << "case should exercise drops";
  }

  const float h = 3e-3f;
  struct Tensor {
    const char* name;
    std::vector<float>* v;
    const std::vector<float>* grad;
  } tensors[] = {{"x", &p.x, &dx}, {"router", &p.wr, &gwr}, {"w1", &p.w1, &gw1}, {"w2", &p.w2, &gw2}};
  Rng pick(99);
  for (const Tensor& tn : tensors) {
    const int probes = 24;
    int valid = 0, skipped = 0;
    double worst = 0;
    for (int n = 0; n < probes; ++n) {
      const size_t i = size_t(pick.next_u64() % tn.v->size());
      const CentralDiff d = central_diff(*tn.v, i, h, [&] {
        RefResult r = ref_forward(s, T, p.x.data(), p.wr.data(), p.w1.data(), p.w2.data());
        layer.forward(p.x.data(), out.data(), T, weights());
        return std::make_pair(dot_loss(out, p.dout), r.signature == base.signature);
      });
      if (!d.same) {
        ++skipped;
        continue;
      }
      ++valid;
      const double fd = (d.plus - d.minus) / (2.0 * h);
      const double an = (*tn.grad)[i];
      const double err = std::abs(fd - an) / (std::abs(an) + 1e-2);
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-2) << tn.name << "[" << i << "]: finite difference " << fd << " vs backward " << an;
    }
    std::printf("  %-6s %d probes valid, %d skipped (boundary), worst relative error %.2e\n", tn.name, valid,
                skipped, worst);
    EXPECT_GE(valid, probes * 3 / 4) << tn.name << ": too many probes crossed a routing/ReLU boundary";
  }
}

INSTANTIATE_TEST_SUITE_P(Routings, MoEGradCheck,
                         testing::Values(GradCase{Routing::expert_choice, 1}, GradCase{Routing::expert_choice, 2},
                                         GradCase{Routing::expert_choice, 4}, GradCase{Routing::token_choice, 1},
                                         GradCase{Routing::token_choice, 2}, GradCase{Routing::token_choice, 4}),
                         name_of);

}  // namespace
