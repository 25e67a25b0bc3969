// Guardrails on runs generated from a known law with noise: silent on a
// well-designed grid, firing on a grid with only 2 model sizes (the first demo design)
// and on c forced below the data's floor; extrapolation flags on a grid whose
// largest compute is known.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "analyze.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "fixtures.hpp"
#include "guardrails.hpp"
#include "synthetic.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

std::string kinds(const Guardrails& g) {
  std::string s;
  for (const auto& f : g.flags) s += f.kind + "(" + f.param + "): " + f.message + "\n";
  return s;
}

struct Fitted {
  FitResult fit;
  BootstrapResult boot;
  Guardrails guard;
};

Fitted fit_and_check(const std::vector<FitPoint>& pts, double entropy, int replicates = 40) {
  FitOptions fo;
  fo.form = LawForm::Fine;
  Fitted r;
  r.fit = fit_law(pts, fo);
  EXPECT_TRUE(r.fit.ok) << r.fit.message;
  BootstrapOptions bo;
  bo.replicates = replicates;
  bo.threads = 2;
  bo.progress = false;
  r.boot = bootstrap_fit(pts, fo, r.fit.law, bo);
  r.guard = check_fit(pts, fo, r.fit, &r.boot, entropy);
  return r;
}

// Runs of the paper's law (c = 0.472) on an N x D x G grid, 0.3 % log-normal noise.
std::vector<FitPoint> grid(std::vector<double> blocks, std::vector<double> Ds, std::vector<double> Gs, double sigma,
                           uint64_t seed, Law truth = paper_law()) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, sigma);
  std::vector<FitPoint> pts;
  for (double nb : blocks)
    for (double D : Ds)
      for (double G : Gs) {
        const double N = finemoe::law_N(64 * nb, nb, 64);
        FitPoint p{N, D, G, truth.loss(N, D, G) * std::exp(noise(rng)), int(pts.size())};
        p.F = finemoe::law_flops_per_token(64 * nb, nb, 64, G) * D;
        pts.push_back(p);
      }
  return pts;
}

}  // namespace

TEST(Guardrails, BimodalityCoefficient) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> n(0, 1);
  std::vector<double> one, two;
  for (int i = 0; i < 200; ++i) {
    one.push_back(n(rng));
    two.push_back(n(rng) * 0.2 + (i % 2 ? 3 : -3));
  }
  EXPECT_LT(bimodality_coefficient(one), 0.45);  // normal: 1/3
  EXPECT_GT(bimodality_coefficient(two), 0.8);   // two separated modes: near 1
}

TEST(Guardrails, SilentOnAWellDesignedGrid) {
  // 5 sizes x 3 budgets x 5 G, the floor 0.01 below the true c.
  const auto pts = grid({4, 6, 8, 11, 16}, {2e9, 8e9, 3.2e10}, {1, 2, 4, 8, 16}, 0.003, 5);
  const Fitted r = fit_and_check(pts, paper_law().c - 0.01);
  EXPECT_TRUE(r.guard.prior_checked);
  EXPECT_TRUE(r.guard.flags.empty()) << kinds(r.guard);
  EXPECT_TRUE(r.guard.suggestions.empty());
}

TEST(Guardrails, FireOnTwoSizes) {
  // The first demo design: 2 model sizes x 3 budgets x 3 G, noisier points.
  const auto pts = grid({4, 8}, {2e9, 8e9, 3.2e10}, {1, 2, 4}, 0.01, 7);
  const Fitted r = fit_and_check(pts, NAN);
  ASSERT_FALSE(r.guard.flags.empty());
  bool size_param = false;
  for (const auto& f : r.guard.flags) size_param = size_param || f.param == "a" || f.param == "alpha" || f.param == "g";
  EXPECT_TRUE(size_param) << kinds(r.guard);
  bool says_sizes = false;
  for (const auto& s : r.guard.suggestions) says_sizes = says_sizes || s.find("more model sizes") != std::string::npos;
  EXPECT_TRUE(says_sizes);
  std::printf("%s", kinds(r.guard).c_str());
}

TEST(Guardrails, CBelowTheFloorIsFlagged) {
  // The law's true c is 0.472; tell the check the data's floor is 1.0.
  const auto pts = grid({4, 6, 8, 11, 16}, {2e9, 8e9, 3.2e10}, {1, 2, 4, 8, 16}, 0.003, 5);
  const Fitted r = fit_and_check(pts, 1.0, 20);
  std::printf("c = %.4g, 95%% [%.4g, %.4g]\n", r.fit.law.c, r.boot.intervals[6].lo, r.boot.intervals[6].hi);
  bool below = false;
  for (const auto& f : r.guard.flags)
    if (f.kind == "below_floor") {
      below = true;
      EXPECT_EQ(f.param, "c");
      EXPECT_NE(f.message.find("entropy rate 1.0000"), std::string::npos) << f.message;
    }
  EXPECT_TRUE(below) << kinds(r.guard);
  bool says_fix = false;
  for (const auto& s : r.guard.suggestions) says_fix = says_fix || s.find("--fix-c entropy") != std::string::npos;
  EXPECT_TRUE(says_fix);
}

// Misfit: the points carry their final-eval standard error. Points from the
// law with noise at that level: silent. The same points with a curvature in
// log D the law cannot follow (the loss falling faster and faster with D, as
// short CPU runs do before the power-law regime): flagged, with the trend.
TEST(Guardrails, MisfitWhenResidualsExceedThePointsNoise) {
  const double se = 0.01;  // nats
  auto pts = grid({4, 6, 8, 11, 16}, {2e9, 8e9, 3.2e10}, {1, 2, 4}, 0.0, 11);
  std::mt19937_64 rng(12);
  std::normal_distribution<double> noise(0.0, se);
  for (auto& p : pts) p.loss += noise(rng), p.loss_se = se;
  const Fitted quiet = fit_and_check(pts, NAN, 0);
  for (const auto& f : quiet.guard.flags) EXPECT_NE(f.kind, "misfit") << f.message;

  // +0.1 nats at the middle budget, against the two ends: a bump in log D.
  for (auto& p : pts)
    if (p.D == 8e9) p.loss += 0.1;
  const Fitted bent = fit_and_check(pts, NAN, 0);
  bool misfit = false;
  for (const auto& f : bent.guard.flags)
    if (f.kind == "misfit") {
      misfit = true;
      EXPECT_EQ(f.param, "fit");
      EXPECT_NE(f.message.find("mean residual (observed - law) by D: 2e+09:"), std::string::npos) << f.message;
    }
  EXPECT_TRUE(misfit) << kinds(bent.guard);
  // Without standard errors there is nothing to compare with: no flag.
  for (auto& p : pts) p.loss_se = 0;
  const Fitted unknown = fit_and_check(pts, NAN, 0);
  for (const auto& f : unknown.guard.flags) EXPECT_NE(f.kind, "misfit") << f.message;
}

// The flags reach fit.json (machine-readable), report.md and the terminal.
TEST(Guardrails, FlagsAreWrittenToFitJsonAndReport) {
  const fs::path dir = temp_dir("guard_out");
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0.0, 0.01);
  int k = 0;
  for (int64_t nb : {4, 8})
    for (double D : {2e9, 8e9, 3.2e10})
      for (int64_t G : {1, 2, 4}) {
        FixtureRun f;
        f.n_blocks = nb;
        f.d_model = 64 * nb;
        f.G = G;
        f.D = D;
        f.final_eval = paper_law().loss(finemoe::law_N(64.0 * nb, nb, 64), D, G) * std::exp(noise(rng));
        f.entropy_rate = 0.9;  // known floor: the suggestion for c names --fix-c entropy
        write_run(dir / "runs", "r" + std::to_string(k++), f);
      }
  const fs::path out = dir / "out";
  ASSERT_EQ(run_cli({(dir / "runs").string(), "--out", out.string(), "--bootstrap", "20", "--threads", "2",
                     "--no-plots", "-q"}),
            finemoe::kExitOk);
  std::ifstream jf(out / "fit.json");
  const std::string json((std::istreambuf_iterator<char>(jf)), {});
  EXPECT_NE(json.find("\"flagged\": true"), std::string::npos) << json.substr(0, 2000);
  EXPECT_NE(json.find("\"kind\": \"not_identified\""), std::string::npos);
  EXPECT_NE(json.find("\"coefficients_without_prior\""), std::string::npos);
  // The floor the c check compares against (every run says 0.9).
  EXPECT_NE(json.find("\"data_entropy_rate\": 0.9,"), std::string::npos);
  std::ifstream rf(out / "report.md");
  const std::string md((std::istreambuf_iterator<char>(rf)), {});
  EXPECT_NE(md.find("**Flags**"), std::string::npos);
  EXPECT_NE(md.find("more model sizes"), std::string::npos);
  EXPECT_NE(md.find("`--fix-c entropy`"), std::string::npos);
  EXPECT_NE(md.find("**not_identified"), std::string::npos);  // in the coefficient table's flags column
  // The optimal table is computed from the flagged law: it says so.
  EXPECT_NE(json.find("\"inherits_flags\": true"), std::string::npos);
  EXPECT_NE(md.find("**Warning:** the moe fit has flagged coefficients ("), std::string::npos);
  EXPECT_NE(md.find("inherit those flags"), std::string::npos);
  fs::remove_all(dir);
}

// The optimal table's shapes follow the runs' own d_model/n_blocks (here 48,
// a sweep's aspect_ratio) unless --aspect says otherwise.
TEST(Guardrails, OptimalShapesFollowTheRunsAspectRatio) {
  const fs::path dir = temp_dir("guard_aspect");
  int k = 0;
  for (int64_t nb : {2, 4})
    for (double D : {1e9, 4e9})
      for (int64_t G : {1, 4}) {
        FixtureRun f;
        f.n_blocks = nb;
        f.d_model = 48 * nb;
        f.G = G;
        f.D = D;
        f.final_eval = paper_law().loss(finemoe::law_N(48.0 * nb, nb, 64), D, G);
        write_run(dir / "runs", "a" + std::to_string(k++), f);
      }
  auto aspect_of = [&](const std::vector<std::string>& extra) {
    const fs::path out = dir / ("out" + std::to_string(k++));
    std::vector<std::string> args = {(dir / "runs").string(), "--out", out.string(), "--no-plots", "-q"};
    args.insert(args.end(), extra.begin(), extra.end());
    EXPECT_EQ(run_cli(args), finemoe::kExitOk);
    std::ifstream jf(out / "fit.json");
    const std::string json((std::istreambuf_iterator<char>(jf)), {});
    const auto at = json.find("\"aspect\": ");
    return at == std::string::npos ? -1.0 : std::stod(json.substr(at + 10));
  };
  EXPECT_EQ(aspect_of({}), 48.0);
  EXPECT_EQ(aspect_of({"--aspect", "64"}), 64.0);
  fs::remove_all(dir);
}
