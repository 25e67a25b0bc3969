// Routing as a property of a run: the MoE law fitted per routing (--routing,
// default the majority's), the expert-vs-token-choice table, and the
// measured loss-vs-G table (best G, "not distinguishable", FLOPs spread).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "analyze.hpp"
#include "compare.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "fixtures.hpp"
#include "points.hpp"

using namespace finemoe::analysis;
using namespace finemoe::analysis::testing;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

AnalyzeOptions quiet_options(const fs::path& out) {
  AnalyzeOptions o;
  o.out_dir = out.string();
  o.plots = false;
  o.quiet = true;
  o.boot.replicates = 0;
  return o;
}

// A small study: expert choice at 3 sizes x 3 budgets x G in {1, 4, 16} from
// the paper's law (0.3 % noise), dense baselines at the same sizes and
// budgets, a token-choice slice at the middle size 0.03 nats above the EC run
// of the same (size, D, G), and one run with an unknown routing.
struct Study {
  std::map<std::tuple<int64_t, double, int64_t>, double> ec;  // (n_blocks, D, G) -> final eval loss
  std::map<std::pair<int64_t, double>, double> dense;         // (n_blocks, D) -> loss
};

constexpr double kTcOffset = 0.03, kSe = 0.004;

Study write_study(const fs::path& dir) {
  Study s;
  const Law truth = paper_law(), dl = paper_dense_law();
  std::mt19937_64 rng(5);
  std::normal_distribution<double> noise(0.0, 0.003);
  for (int64_t nb : {4, 6, 8})
    for (double D : {2e9, 8e9, 3.2e10}) {
      for (int64_t G : {1, 4, 16}) {
        FixtureRun f;
        f.n_blocks = nb, f.d_model = 64 * nb, f.G = G, f.D = D, f.entropy_rate = 0.47;
        const double L = truth.loss(finemoe::law_N(64.0 * nb, nb, 64), D, G) * std::exp(noise(rng));
        f.final_eval = L, f.final_loss = L + 0.1;
        s.ec[{nb, D, G}] = L;
        char name[64];
        std::snprintf(name, sizeof name, "ec_%ld_%g_%ld", long(nb), D, long(G));
        write_run(dir, name, f);
        if (nb == 6) {
          f.routing = "token_choice";
          f.final_eval = L + kTcOffset;
          std::snprintf(name, sizeof name, "tc_%ld_%g_%ld", long(nb), D, long(G));
          write_run(dir, name, f);
        }
      }
      FixtureRun f;
      f.n_blocks = nb, f.d_model = 64 * nb, f.D = D, f.dense = true, f.entropy_rate = 0.47;
      f.final_eval = dl.loss(finemoe::law_N_active(64.0 * nb, nb), D, 1) * std::exp(noise(rng));
      s.dense[{nb, D}] = f.final_eval;
      write_run(dir, "dense_" + std::to_string(nb) + "_" + std::to_string(int64_t(D)), f);
    }
  FixtureRun bad;
  bad.routing = "sinkhorn";
  bad.final_eval = 3;
  write_run(dir, "zz_bad_routing", bad);
  return s;
}

}  // namespace

TEST(Compare, RoutingComesFromTheConfigAttributeOrTheStoredIni) {
  finemoe::RunMetrics m;
  m.str_attrs["status"] = "completed";
  m.num_attrs = {{"d_model", 256}, {"n_blocks", 4}, {"E", 64}, {"G", 4}};
  for (int i = 1; i <= 10; ++i) m.train.push_back({i, i * 1000, 3.0});
  CollectOptions o;
  EXPECT_EQ(run_from_metrics(m, o).routing, "expert_choice");  // neither: the trainer's default
  m.str_attrs["config"] = "[model]\nd_model = 256\n\n[moe]\nexperts = 64\nrouting = token_choice\n";
  EXPECT_EQ(run_from_metrics(m, o).routing, "token_choice");   // the stored config.ini
  m.str_attrs["config.moe.routing"] = "expert_choice";
  EXPECT_EQ(run_from_metrics(m, o).routing, "expert_choice");  // the attribute wins
  m.str_attrs["config.moe.routing"] = "hash";
  try {
    run_from_metrics(m, o);
    ADD_FAILURE() << "an unknown routing was accepted";
  } catch (const finemoe::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("moe.routing is 'hash'"), std::string::npos) << e.what();
  }
  m.num_attrs["dense"] = 1;
  EXPECT_EQ(run_from_metrics(m, o).routing, "");  // dense runs have no routing
}

TEST(Compare, StudyFitsOneRoutingAndComparesTheOther) {
  const fs::path dir = temp_dir("cmp_study");
  const Study s = write_study(dir / "runs");
  AnalyzeOptions o = quiet_options(dir / "out");
  o.runs_dir = (dir / "runs").string();
  o.fix_c_entropy = true;
  o.holdout = "largest-n";
  o.optimal = "1e17,1e18,1e20";
  o.write_points = (dir / "points.csv").string();
  Analysis a = run_analysis(o);
  ASSERT_EQ(a.runs.runs.size(), 27u + 9u + 9u);
  ASSERT_EQ(a.runs.skipped.size(), 1u);
  EXPECT_NE(a.runs.skipped[0].reason.find("moe.routing is 'sinkhorn'"), std::string::npos) << a.runs.skipped[0].reason;

  // Default: the majority (27 EC against 9 TC); the fit, its holdout and the
  // optimal table see the 27 EC runs only.
  EXPECT_EQ(a.routing, "expert_choice");
  EXPECT_EQ(a.routing_chosen_by, "majority");
  EXPECT_EQ(a.routing_counts.at("expert_choice"), 27);
  EXPECT_EQ(a.routing_counts.at("token_choice"), 9);
  EXPECT_EQ(a.routing_excluded, 9);
  EXPECT_NE(a.routing_note.find("9 token-choice runs are compared below, not fitted: the law is fitted per routing"),
            std::string::npos)
      << a.routing_note;
  ASSERT_EQ(a.fits.size(), 2u);  // moe, dense
  const FitReport& moe = a.fits[0];
  ASSERT_EQ(moe.label, "moe");
  ASSERT_TRUE(moe.fit.ok) << moe.fit.message;
  EXPECT_EQ(moe.points.size(), 27u);
  for (const auto& p : moe.points) EXPECT_EQ(a.runs.runs[size_t(p.group)].routing, "expert_choice");
  ASSERT_TRUE(moe.holdout.ok);
  EXPECT_EQ(moe.holdout.train_runs + moe.holdout.test_runs, 27);
  EXPECT_EQ(a.fits[1].points.size(), 9u);  // dense unaffected

  // Expert vs token choice: the 9 (size, D, G) of the TC slice, TC - EC = 0.03
  // exactly, combined SE sqrt(2)*0.004: all beyond 2 SE.
  ASSERT_TRUE(a.routing_cmp.present);
  EXPECT_EQ(a.routing_cmp.ec_runs, 27);
  EXPECT_EQ(a.routing_cmp.tc_runs, 9);
  ASSERT_EQ(a.routing_cmp.rows.size(), 9u);
  for (const auto& r : a.routing_cmp.rows) {
    EXPECT_EQ(r.n_blocks, 6);
    EXPECT_EQ(r.d_model, 384);
    const double ec = s.ec.at({6, r.D, int64_t(r.G)});
    EXPECT_DOUBLE_EQ(r.ec.loss, ec);
    EXPECT_DOUBLE_EQ(r.tc.loss, ec + kTcOffset);
    EXPECT_NEAR(r.diff, kTcOffset, 1e-12);
    EXPECT_NEAR(r.se, std::sqrt(2.0) * kSe, 1e-12);
    EXPECT_TRUE(r.significant);
  }

  // Loss vs G: 3 sizes x 3 budgets of EC runs, 3 G each, dense beside them.
  ASSERT_EQ(a.loss_vs_g.size(), 9u);
  for (const auto& r : a.loss_vs_g) {
    const int64_t nb = int64_t(r.n_blocks);
    ASSERT_EQ(r.per_g.size(), 3u);
    ASSERT_TRUE(r.has_dense);
    EXPECT_DOUBLE_EQ(r.dense.loss, s.dense.at({nb, r.D}));
    std::map<double, double> by_loss;  // loss -> G
    for (int64_t G : {1, 4, 16}) by_loss[s.ec.at({nb, r.D, G})] = double(G);
    auto it = by_loss.begin();
    EXPECT_EQ(r.best_G, it->second);
    const double best = it->first;
    ++it;
    EXPECT_EQ(r.runner_up_G, it->second);
    EXPECT_NEAR(r.gap, it->first - best, 1e-12);
    EXPECT_EQ(r.distinguishable, it->first - best > 2 * std::sqrt(2.0) * kSe);
    const double d = 64.0 * double(nb);
    EXPECT_NEAR(r.F_spread,
                finemoe::law_flops_per_token(d, double(nb), 64, 16) / finemoe::law_flops_per_token(d, double(nb), 64, 1) - 1,
                1e-12);
    EXPECT_GT(r.F_spread, 0);
  }

  // The multiplier at the optimal G and at G = 1, from the same law.
  // Each is marked extrapolated by its own optimum's N and D (and the budget).
  ASSERT_TRUE(a.optimal.has_dense);
  ASSERT_EQ(a.optimal.rows.size(), 3u);
  for (const auto& r : a.optimal.rows) {
    EXPECT_TRUE(std::isfinite(r.multiplier_g1));
    EXPECT_GE(r.multiplier, r.multiplier_g1);  // the best G is at least as good as G = 1
    const OptimalPoint* g1 = nullptr;
    for (const auto& p : r.per_g)
      if (p.G == 1) g1 = &p;
    ASSERT_NE(g1, nullptr);
    const auto& op = a.optimal;
    EXPECT_EQ(r.extrapolated_g1, r.best.budget > 10 * op.F_max || g1->N_total > 10 * op.N_max || g1->D > 10 * op.D_max);
  }
  const double F_max = a.optimal.F_max;  // 27 EC runs: 8x512, G = 16, D = 3.2e10
  EXPECT_DOUBLE_EQ(F_max, finemoe::law_flops_per_token(512, 8, 64, 16) * 3.2e10);
  EXPECT_FALSE(a.optimal.rows[0].extrapolated_g1);
  EXPECT_TRUE(a.optimal.rows[2].extrapolated_g1);  // 1e20 is 14.9x the largest run's F
  EXPECT_EQ(a.optimal.rows[2].extrapolated_g1_why.rfind("F 14.9x", 0), 0u) << a.optimal.rows[2].extrapolated_g1_why;

  // The written points keep routing, shape and SE: read back, same runs.
  const RunSet back = read_points_csv(o.write_points);
  std::map<std::string, int> routes;
  for (const auto& r : back.runs) routes[r.routing]++;
  EXPECT_EQ(routes["expert_choice"], 27);
  EXPECT_EQ(routes["token_choice"], 9);
  EXPECT_EQ(routes[""], 9);
  for (const auto& r : back.runs) {
    EXPECT_GT(r.n_blocks, 0);
    EXPECT_DOUBLE_EQ(r.final_stderr, kSe);
  }

  // --routing token_choice: the TC slice is fitted (one size: not
  // identifiable), the EC runs are the ones left out; 9 of them compared.
  AnalyzeOptions t = o;
  t.routing = "token_choice";
  t.write_points.clear();
  t.holdout.clear();
  t.fix_c_entropy = false;
  Analysis b = run_analysis(t);
  EXPECT_EQ(b.routing, "token_choice");
  EXPECT_EQ(b.routing_chosen_by, "--routing");
  EXPECT_EQ(b.routing_excluded, 27);
  EXPECT_NE(b.routing_note.find("27 expert-choice runs not fitted (the law is fitted per routing); 9 of them are "
                                "compared below"),
            std::string::npos)
      << b.routing_note;
  ASSERT_FALSE(b.fits.empty());
  EXPECT_EQ(b.fits[0].points.size(), 9u);
  for (const auto& p : b.fits[0].points) EXPECT_EQ(b.runs.runs[size_t(p.group)].routing, "token_choice");
  ASSERT_EQ(b.loss_vs_g.size(), 3u);  // one size x 3 budgets
  for (const auto& r : b.loss_vs_g) EXPECT_EQ(r.n_blocks, 6);

  // The whole program: terminal line, report sections, fit.json, plots.
  const fs::path out = dir / "cli";
  ::testing::internal::CaptureStdout();
  const int rc = run_cli({(dir / "runs").string(), "--out", out.string(), "--bootstrap", "4", "--threads", "2",
                          "--holdout", "largest-n", "--fix-c", "entropy"});
  const std::string term = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, finemoe::kExitOk) << term;
  EXPECT_NE(term.find("9 token-choice runs are compared below, not fitted: the law is fitted per routing"),
            std::string::npos);
  EXPECT_NE(term.find("expert vs token choice (27 EC, 9 TC MoE runs): 9 (E, size, D, G) with both"), std::string::npos)
      << term;
  EXPECT_NE(term.find("final loss vs G (expert_choice MoE runs"), std::string::npos);
  const std::string report = slurp(out / "report.md");
  EXPECT_NE(report.find("**9 token-choice runs are compared below, not fitted: the law is fitted per routing"),
            std::string::npos);
  EXPECT_NE(report.find("## Expert choice vs token choice"), std::string::npos);
  EXPECT_NE(report.find("ignores the positive correlation of two runs evaluated on the same held-out tokens"),
            std::string::npos);
  EXPECT_NE(report.find("| 64 | 6×384 | 2e+09 | 4 |"), std::string::npos);
  EXPECT_NE(report.find("TC − EC: mean +0.0300 nats over 9 rows; beyond 2 combined SE in 9 (TC worse in 9, better in 0)"),
            std::string::npos);
  EXPECT_NE(report.find("## Final loss vs G per size and token budget"), std::string::npos);
  EXPECT_NE(report.find("| same, G = 1 |"), std::string::npos);
  // Equal D is not equal F: the G = 4 and 16 runs at each D cost more than
  // G = 1's, so the smallest G = 1 budget (D = 2e9) is below their runs (no
  // row); the two others lie between their runs at 4x less D and at the same D.
  ASSERT_EQ(a.loss_vs_g_iso.size(), 3u);
  for (const auto& s : a.loss_vs_g_iso) {
    ASSERT_EQ(s.rows.size(), 2u);
    EXPECT_EQ(s.rows[0].D_ref, 8e9);
    for (const auto& r : s.rows) {
      ASSERT_EQ(r.per_g.size(), 3u);
      EXPECT_FALSE(r.per_g[0].interpolated);
      EXPECT_TRUE(r.per_g[1].interpolated && r.per_g[2].interpolated);
      EXPECT_EQ(r.per_g[2].D_hi, r.D_ref);
    }
  }
  EXPECT_NE(report.find("## Final loss vs G at equal compute (interpolated in log F between a G's own runs)"),
            std::string::npos);
  const std::string json = slurp(out / "fit.json");
  EXPECT_NE(json.find("\"fitted\": \"expert_choice\""), std::string::npos);
  EXPECT_NE(json.find("\"routing_comparison\""), std::string::npos);
  EXPECT_NE(json.find("\"loss_vs_g\""), std::string::npos);
  EXPECT_NE(json.find("\"not_fitted\": 9"), std::string::npos);
  if (fs::exists("/usr/bin/gnuplot"))
    for (const char* p : {"routing", "loss_vs_g", "loss_vs_g_iso"}) {
      EXPECT_TRUE(fs::exists(out / "plots" / (std::string(p) + ".png"))) << p;
      EXPECT_TRUE(fs::exists(out / "plots" / (std::string(p) + ".svg"))) << p;
      EXPECT_NE(report.find(std::string("](plots/") + p + ".png)"), std::string::npos) << p;
    }
  fs::remove_all(dir);
}

TEST(Compare, DefaultRoutingIsTheMajorityTiesExpertChoice) {
  const fs::path dir = temp_dir("cmp_major");
  auto analyse = [&](int ec, int tc) {
    std::ofstream f(dir / "p.csv");
    f << "run,N,D,loss,G,E,routing\n";
    for (int i = 0; i < ec + tc; ++i)
      f << "r" << i << "," << 1e8 * (1 + i) << ",1e9," << 3.0 - 0.01 * i << ",4,64,"
        << (i < ec ? "expert_choice" : "token_choice") << "\n";
    f.close();
    AnalyzeOptions o = quiet_options(dir / "out");
    o.points = (dir / "p.csv").string();
    return run_analysis(o);
  };
  Analysis a = analyse(3, 4);
  EXPECT_EQ(a.routing, "token_choice");
  EXPECT_EQ(a.routing_excluded, 3);
  EXPECT_EQ(a.fits[0].points.size(), 4u);
  // Different N per row: nothing to compare, and the note says so.
  EXPECT_TRUE(a.routing_cmp.present);
  EXPECT_TRUE(a.routing_cmp.rows.empty());
  EXPECT_NE(a.routing_note.find("3 expert-choice runs not fitted (the law is fitted per routing); 0 of them are"),
            std::string::npos)
      << a.routing_note;
  Analysis b = analyse(4, 4);
  EXPECT_EQ(b.routing, "expert_choice");
  EXPECT_EQ(b.routing_excluded, 4);
  Analysis c = analyse(5, 0);
  EXPECT_EQ(c.routing, "expert_choice");
  EXPECT_EQ(c.routing_excluded, 0);
  EXPECT_TRUE(c.routing_note.empty());
  EXPECT_FALSE(c.routing_cmp.present);
  fs::remove_all(dir);
}

namespace {

// N of a 64-expert (or dense) model of this shape, written exactly.
std::string moe_row(const std::string& run, int64_t nb, double D, double G, double loss, double se,
                    const char* routing, bool dense = false) {
  const double d = 64.0 * double(nb);
  const double N = finemoe::law_N(d, double(nb), dense ? 1 : 64);
  char b[256];
  std::snprintf(b, sizeof b, "%s,%.17g,%g,%.17g,%g,%d,%s,%.17g,%ld,%g,%d\n", run.c_str(), N, D, loss, G, dense ? 1 : 64,
                routing, se, long(nb), d, int(dense));
  return b;
}

const char* kHeader = "run,N,D,loss,G,E,routing,loss_se,n_blocks,d_model,dense\n";

}  // namespace

TEST(Compare, ExpertVsTokenChoiceTableValues) {
  const fs::path dir = temp_dir("cmp_ectc");
  {
    std::ofstream f(dir / "p.csv");
    f << kHeader;
    // (4, 1e9, G=1): TC worse by 0.020, 2 SE = 2*sqrt(0.003^2 + 0.004^2) = 0.010: significant.
    f << moe_row("ec1", 4, 1e9, 1, 3.000, 0.003, "expert_choice") << moe_row("tc1", 4, 1e9, 1, 3.020, 0.004, "token_choice");
    // (4, 1e9, G=4): TC worse by 0.009 < 0.010: not significant.
    f << moe_row("ec2", 4, 1e9, 4, 2.950, 0.003, "expert_choice") << moe_row("tc2", 4, 1e9, 4, 2.959, 0.004, "token_choice");
    // (4, 4e9, G=4): TC better by 0.020: significant.
    f << moe_row("ec3", 4, 4e9, 4, 2.900, 0.003, "expert_choice") << moe_row("tc3", 4, 4e9, 4, 2.880, 0.004, "token_choice");
    // (8, 4e9, G=4): the TC run has no SE: no verdict.
    f << moe_row("ec4", 8, 4e9, 4, 2.700, 0.003, "expert_choice") << moe_row("tc4", 8, 4e9, 4, 2.600, 0, "token_choice");
    // (8, 1e9, G=16): TC only; (8, 1e9, G=1) EC only: neither compared.
    f << moe_row("tc5", 8, 1e9, 16, 2.8, 0.004, "token_choice") << moe_row("ec5", 8, 1e9, 1, 2.9, 0.003, "expert_choice");
  }
  AnalyzeOptions o = quiet_options(dir / "out");
  o.points = (dir / "p.csv").string();
  Analysis a = run_analysis(o);
  EXPECT_EQ(a.routing, "expert_choice");  // 5 against 5: the tie goes to expert choice
  const auto& c = a.routing_cmp;
  ASSERT_TRUE(c.present);
  EXPECT_EQ(c.ec_runs, 5);
  EXPECT_EQ(c.tc_runs, 5);
  ASSERT_EQ(c.rows.size(), 4u);  // by size, D, G
  const double se = std::sqrt(0.003 * 0.003 + 0.004 * 0.004);
  struct Want {
    double nb, D, G, ec, tc;
    bool sig;
  } want[] = {{4, 1e9, 1, 3.000, 3.020, true}, {4, 1e9, 4, 2.950, 2.959, false}, {4, 4e9, 4, 2.900, 2.880, true},
              {8, 4e9, 4, 2.700, 2.600, false}};
  for (size_t i = 0; i < 4; ++i) {
    const auto& r = c.rows[i];
    EXPECT_EQ(r.n_blocks, want[i].nb) << i;
    EXPECT_EQ(r.d_model, 64 * want[i].nb) << i;
    EXPECT_EQ(r.D, want[i].D) << i;
    EXPECT_EQ(r.G, want[i].G) << i;
    EXPECT_EQ(r.ec.loss, want[i].ec) << i;
    EXPECT_EQ(r.tc.loss, want[i].tc) << i;
    EXPECT_NEAR(r.diff, want[i].tc - want[i].ec, 1e-12) << i;
    EXPECT_EQ(r.significant, want[i].sig) << i;
    if (i < 3) {
      EXPECT_NEAR(r.se, se, 1e-15) << i;
    }
  }
  EXPECT_NEAR(2 * c.rows[0].se, 0.010, 1e-12);
  EXPECT_TRUE(std::isnan(c.rows[3].se));  // the TC run's SE is unknown
  EXPECT_NE(a.routing_note.find("5 token-choice runs not fitted (the law is fitted per routing); 4 of them are compared"),
            std::string::npos)
      << a.routing_note;
  write_outputs(a);
  const std::string report = slurp(dir / "out" / "report.md");
  EXPECT_NE(report.find("| 64 | 4×256 | 1e+09 | 1 | 3.0000 ± 0.0030 | 3.0200 ± 0.0040 | +0.0200 | 0.0100 | yes |"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("| 64 | 4×256 | 1e+09 | 4 | 2.9500 ± 0.0030 | 2.9590 ± 0.0040 | +0.0090 | 0.0100 | no |"),
            std::string::npos);
  EXPECT_NE(report.find("| 64 | 8×512 | 4e+09 | 4 | 2.7000 ± 0.0030 | 2.6000 ± ? | -0.1000 | – | SE unknown |"),
            std::string::npos);
  EXPECT_NE(report.find("beyond 2 combined SE in 2 (TC worse in 1, better in 1); 1 without an SE (no verdict)"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Compare, LossVsGBestGDistinguishabilityAndFlopsSpread) {
  const fs::path dir = temp_dir("cmp_lvg");
  {
    std::ofstream f(dir / "p.csv");
    f << kHeader;
    // (4, 1e9): G = 8 lowest but within 2 combined SE (0.0113) of G = 4.
    f << moe_row("a1", 4, 1e9, 1, 3.100, 0.004, "expert_choice") << moe_row("a2", 4, 1e9, 2, 3.050, 0.004, "expert_choice")
      << moe_row("a4", 4, 1e9, 4, 3.000, 0.004, "expert_choice") << moe_row("a8", 4, 1e9, 8, 2.995, 0.004, "expert_choice");
    f << moe_row("dense_a", 4, 1e9, 1, 3.200, 0.004, "", true);
    // (4, 4e9): G = 4 best by 0.05 > 0.0113 over G = 8.
    f << moe_row("b1", 4, 4e9, 1, 3.000, 0.004, "expert_choice") << moe_row("b4", 4, 4e9, 4, 2.900, 0.004, "expert_choice")
      << moe_row("b8", 4, 4e9, 8, 2.950, 0.004, "expert_choice");
    // (8, 1e9): one G only: no row. A token-choice run there: not in this table.
    f << moe_row("c1", 8, 1e9, 1, 2.9, 0.004, "expert_choice") << moe_row("c4tc", 8, 1e9, 4, 2.5, 0.004, "token_choice");
  }
  AnalyzeOptions o = quiet_options(dir / "out");
  o.points = (dir / "p.csv").string();
  Analysis a = run_analysis(o);
  ASSERT_EQ(a.loss_vs_g.size(), 2u);
  const LossVsG& r = a.loss_vs_g[0];
  EXPECT_EQ(r.n_blocks, 4);
  EXPECT_EQ(r.D, 1e9);
  ASSERT_EQ(r.per_g.size(), 4u);
  EXPECT_EQ(r.per_g[0].G, 1);
  EXPECT_EQ(r.per_g[3].G, 8);
  EXPECT_EQ(r.per_g[2].cell.loss, 3.000);
  EXPECT_EQ(r.per_g[2].cell.se, 0.004);
  EXPECT_EQ(r.best_G, 8);
  EXPECT_EQ(r.runner_up_G, 4);
  EXPECT_NEAR(r.gap, 0.005, 1e-12);
  EXPECT_NEAR(r.gap_se, std::sqrt(2.0) * 0.004, 1e-15);
  EXPECT_FALSE(r.distinguishable);
  ASSERT_TRUE(r.has_dense);
  EXPECT_EQ(r.dense.loss, 3.2);
  // F = F/token(d, n_blocks, E, G) * D (the router grows with G): spread G = 8 vs G = 1.
  const double f1 = finemoe::law_flops_per_token(256, 4, 64, 1), f8 = finemoe::law_flops_per_token(256, 4, 64, 8);
  EXPECT_NEAR(r.per_g[0].cell.F, f1 * 1e9, 1e-6 * f1 * 1e9);
  EXPECT_NEAR(r.F_spread, f8 / f1 - 1, 1e-12);
  // (12 d² 6 + d E G 14) n_blocks: the router adds 7·d·E·14 going from G = 1 to 8, ≈ 32 % at d = 256, E = 64.
  EXPECT_NEAR(r.F_spread, 7.0 * 256 * 64 * 14 / (12.0 * 256 * 256 * 6 + 256 * 64 * 14), 1e-12);
  const LossVsG& s = a.loss_vs_g[1];
  EXPECT_EQ(s.D, 4e9);
  EXPECT_EQ(s.best_G, 4);
  EXPECT_EQ(s.runner_up_G, 8);
  EXPECT_NEAR(s.gap, 0.05, 1e-12);
  EXPECT_TRUE(s.distinguishable);
  EXPECT_FALSE(s.has_dense);
  write_outputs(a);
  const std::string report = slurp(dir / "out" / "report.md");
  EXPECT_NE(report.find("| 64 | 4×256 | 1e+09 | 3.1000 ± 0.0040 | 3.0500 ± 0.0040 | 3.0000 ± 0.0040 | 2.9950 ± 0.0040 "
                        "**best** | 3.2000 ± 0.0040 |"),
            std::string::npos)
      << report;
  char spread[160];
  std::snprintf(spread, sizeof spread, "| %.3g – %.3g | %.2f %% | G = 8, not distinguishable from G = 4 (gap 0.0050 ≤ 2 SE 0.0113) |",
                f1 * 1e9, f8 * 1e9, 100 * (f8 / f1 - 1));
  EXPECT_NE(report.find(spread), std::string::npos) << spread;
  EXPECT_NE(report.find("G = 4 (G = 8 next, gap 0.0500 > 2 SE 0.0113)"), std::string::npos);
  EXPECT_NE(report.find("In 1 of 2 rows the best G is not distinguishable from the runner-up."), std::string::npos);
  fs::remove_all(dir);
}

TEST(Compare, BadRoutingIsAUsageError) {
  const fs::path dir = temp_dir("cmp_bad");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_cli({"/tmp", "--routing", "topk", "--no-plots"}), finemoe::kExitUsage);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("--routing: expected expert_choice or token_choice, got 'topk'"), std::string::npos) << err;
  // A routing no MoE run uses: an error naming what the runs have.
  {
    std::ofstream f(dir / "p.csv");
    f << "N,D,loss,G,E\n1e8,1e9,3,4,64\n2e8,1e9,2.9,4,64\n";
  }
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_cli({"--points", (dir / "p.csv").string(), "--routing", "token_choice", "--out",
                     (dir / "out").string(), "--no-plots", "-q", "--bootstrap", "0"}),
            finemoe::kExitUsage);
  err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("--routing token_choice: no MoE run uses it (MoE runs: 2 expert_choice)"), std::string::npos)
      << err;
  // A bad routing in a --points CSV: exit 3 naming the file, line and column.
  {
    std::ofstream f(dir / "q.csv");
    f << "N,D,loss,routing\n1e8,1e9,3,expert_choice\n2e8,1e9,2.9,top2\n";
  }
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_cli({"--points", (dir / "q.csv").string(), "--out", (dir / "out").string(), "--no-plots", "-q"}),
            finemoe::kExitDataError);
  err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("q.csv:3: column 'routing': 'top2' is not expert_choice or token_choice"), std::string::npos)
      << err;
  fs::remove_all(dir);
}

namespace {

// A --points row with D written exactly (%.17g), so the F the analysis
// computes (F/token of the shape times D) is the F the test computes.
std::string iso_row(const std::string& run, int64_t nb, double D, double G, double loss, double se, bool dense = false) {
  const double d = 64.0 * double(nb);
  char b[320];
  std::snprintf(b, sizeof b, "%s,%.17g,%.17g,%.17g,%g,%d,%s,%.17g,%ld,%g,%d\n", run.c_str(),
                finemoe::law_N(d, double(nb), dense ? 1 : 64), D, loss, G, dense ? 1 : 64,
                dense ? "" : "expert_choice", se, long(nb), d, int(dense));
  return b;
}

double iso_F(int64_t nb, double D, double G, bool dense = false) {
  return finemoe::law_flops_per_token(64.0 * double(nb), double(nb), 64, G, dense) * D;
}

// L = c_G − s·ln F: linear in log F, so interpolation in log F is exact.
constexpr double kIsoS = 0.05;
double iso_loss(double c, double F) { return c - kIsoS * std::log(F); }

}  // namespace

TEST(Compare, LossVsGIsoFlopsInterpolatesInLogFWithinEachG) {
  const fs::path dir = temp_dir("cmp_iso");
  // Size 4×256 (E 64): the router makes F/token of G = 4 and G = 16 13.9 %
  // and 69.5 % above G = 1's, so equal D is not equal F.
  const double c1 = 4.0, c4 = 3.97, c16 = 3.965, cd = 4.1;
  const double f1 = iso_F(4, 1, 1), f4 = iso_F(4, 1, 4);
  const double D4x = 2e9 * f1 / f4;  // a G = 4 run at the F of the G = 1 run at D = 2e9
  const double L16a = iso_loss(c16, iso_F(4, 0.5e9, 16));
  {
    std::ofstream f(dir / "p.csv");
    f << kHeader;
    for (double D : {0.5e9, 1e9, 2e9, 4e9}) f << iso_row("g1_" + std::to_string(D), 4, D, 1, iso_loss(c1, iso_F(4, D, 1)), 0.004);
    f << iso_row("g4_a", 4, 0.8e9, 4, iso_loss(c4, iso_F(4, 0.8e9, 4)), 0.002);
    f << iso_row("g4_x", 4, D4x, 4, iso_loss(c4, iso_F(4, D4x, 4)), 0.004);
    f << iso_row("g4_b", 4, 4e9, 4, iso_loss(c4, iso_F(4, 4e9, 4)), 0.006);
    // Two seeds at (G = 16, D = 0.5e9): averaged into one cell, SE sqrt(0.004² + 0.006²)/2.
    f << iso_row("g16_a1", 4, 0.5e9, 16, L16a + 0.01, 0.004) << iso_row("g16_a2", 4, 0.5e9, 16, L16a - 0.01, 0.006);
    f << iso_row("g16_b", 4, 1.2e9, 16, iso_loss(c16, iso_F(4, 1.2e9, 16)), 0.005);
    for (double D : {1e9, 3e9}) f << iso_row("dense_" + std::to_string(D), 4, D, 1, iso_loss(cd, iso_F(4, D, 1, true)), 0.004, true);
    // Size 6×384, no G = 1: the budgets are G = 2's.
    for (double D : {1e9, 2e9}) f << iso_row("s6_g2_" + std::to_string(D), 6, D, 2, iso_loss(3.8, iso_F(6, D, 2)), 0.004);
    for (double D : {0.9e9, 2e9}) f << iso_row("s6_g8_" + std::to_string(D), 6, D, 8, iso_loss(3.75, iso_F(6, D, 8)), 0.004);
    // Size 8×512: G = 4 at one F only, so one usable G: no table.
    for (double D : {1e9, 2e9}) f << iso_row("s8_g1_" + std::to_string(D), 8, D, 1, iso_loss(3.6, iso_F(8, D, 1)), 0.004);
    f << iso_row("s8_g4", 8, 1e9, 4, iso_loss(3.55, iso_F(8, 1e9, 4)), 0.004);
  }
  AnalyzeOptions o = quiet_options(dir / "out");
  o.points = (dir / "p.csv").string();
  Analysis a = run_analysis(o);
  ASSERT_EQ(a.loss_vs_g_iso.size(), 2u);

  const LossVsGIso& s = a.loss_vs_g_iso[0];
  EXPECT_EQ(s.E, 64);
  EXPECT_EQ(s.n_blocks, 4);
  EXPECT_EQ(s.d_model, 256);
  EXPECT_EQ(s.reference_G, 1);
  EXPECT_EQ(s.G_values, (std::vector<double>{1, 4, 16}));
  EXPECT_TRUE(s.has_dense_runs);
  // Budgets: F of the G = 1 runs. At D = 0.5e9 only G = 1 has data (G = 4
  // starts at 0.91x, G = 16 at 0.85x the F of G = 1 at 1e9): no row.
  ASSERT_EQ(s.rows.size(), 3u);
  const double se16a = std::sqrt(0.004 * 0.004 + 0.006 * 0.006) / 2;
  // The expected (loss, se) of cells (F_a, se_a), (F_b, se_b) interpolated to F.
  auto se_at = [](double F, double Fa, double sa, double Fb, double sb) {
    const double t = (std::log(F) - std::log(Fa)) / (std::log(Fb) - std::log(Fa));
    return (1 - t) * sa + t * sb;
  };
  const double c_of[] = {c1, c4, c16};
  for (size_t i = 0; i < 3; ++i) {
    const LossVsGIsoRow& r = s.rows[i];
    const double D = 1e9 * double(1 << i);
    EXPECT_NEAR(r.F, f1 * D, 1e-9 * f1 * D) << i;
    EXPECT_EQ(r.D_ref, D) << i;
    ASSERT_EQ(r.per_g.size(), i < 2 ? 3u : 2u) << i;
    for (size_t k = 0; k < r.per_g.size(); ++k) {
      // The function itself at the budget, whether interpolated or a run.
      EXPECT_NEAR(r.per_g[k].loss, iso_loss(c_of[k], r.F), 1e-12) << i << " G " << r.per_g[k].G;
    }
    EXPECT_EQ(r.per_g[0].G, 1);
    EXPECT_FALSE(r.per_g[0].interpolated);
    EXPECT_EQ(r.per_g[0].se, 0.004);
    EXPECT_EQ(r.per_g[1].G, 4);
    ASSERT_TRUE(r.has_dense == (i < 2)) << i;
    if (r.has_dense) {
      EXPECT_TRUE(r.dense.interpolated);
      EXPECT_NEAR(r.dense.loss, iso_loss(cd, r.F), 1e-12);
      EXPECT_NEAR(r.dense.se, 0.004, 1e-15);
    }
  }
  // F of G = 1 at 1e9: G = 4 between 0.8e9 and the exact-F run, G = 16
  // between the two seeds' cell and 1.2e9; all three interpolated but G = 1.
  const LossVsGIsoRow& r0 = s.rows[0];
  EXPECT_TRUE(r0.per_g[1].interpolated);
  EXPECT_EQ(r0.per_g[1].D_lo, 0.8e9);
  EXPECT_EQ(r0.per_g[1].D_hi, D4x);
  EXPECT_NEAR(r0.per_g[1].se, se_at(r0.F, iso_F(4, 0.8e9, 4), 0.002, iso_F(4, D4x, 4), 0.004), 1e-15);
  EXPECT_EQ(r0.per_g[2].G, 16);
  EXPECT_TRUE(r0.per_g[2].interpolated);
  EXPECT_EQ(r0.per_g[2].runs, (std::vector<std::string>{"g16_a1", "g16_a2", "g16_b"}));
  const double se16_0 = se_at(r0.F, iso_F(4, 0.5e9, 16), se16a, iso_F(4, 1.2e9, 16), 0.005);
  EXPECT_NEAR(r0.per_g[2].se, se16_0, 1e-15);
  // Best G = 16, 0.005 below G = 4: within 2 combined SE, not distinguishable.
  EXPECT_EQ(r0.best_G, 16);
  EXPECT_EQ(r0.runner_up_G, 4);
  EXPECT_NEAR(r0.gap, 0.005, 1e-12);
  EXPECT_NEAR(r0.gap_se, std::hypot(r0.per_g[1].se, se16_0), 1e-15);
  EXPECT_FALSE(r0.distinguishable);
  EXPECT_TRUE(r0.outside_G.empty());
  // F of G = 1 at 2e9: the G = 4 run at that F is an exact cell, not interpolated.
  const LossVsGIsoRow& r1 = s.rows[1];
  EXPECT_FALSE(r1.per_g[1].interpolated);
  EXPECT_EQ(r1.per_g[1].se, 0.004);
  EXPECT_EQ(r1.per_g[1].runs, (std::vector<std::string>{"g4_x"}));
  EXPECT_TRUE(r1.per_g[2].interpolated);
  EXPECT_EQ(r1.best_G, 16);
  EXPECT_FALSE(r1.distinguishable);
  // F of G = 1 at 4e9: beyond G = 16's last run (2.03x): no entry, never extrapolated.
  // G = 4 best by 0.03 > 2 combined SE over G = 1.
  const LossVsGIsoRow& r2 = s.rows[2];
  EXPECT_EQ(r2.outside_G, (std::vector<double>{16}));
  EXPECT_TRUE(r2.per_g[1].interpolated);
  const double se4_2 = se_at(r2.F, iso_F(4, D4x, 4), 0.004, iso_F(4, 4e9, 4), 0.006);
  EXPECT_NEAR(r2.per_g[1].se, se4_2, 1e-15);
  EXPECT_EQ(r2.best_G, 4);
  EXPECT_EQ(r2.runner_up_G, 1);
  EXPECT_NEAR(r2.gap, 0.03, 1e-12);
  EXPECT_NEAR(r2.gap_se, std::hypot(0.004, se4_2), 1e-15);
  EXPECT_TRUE(r2.distinguishable);

  // 6×384 without G = 1: budgets of G = 2; at its 1e9 run G = 8's runs start
  // above that F (fewer than 2 G): one row, at 2e9.
  const LossVsGIso& t = a.loss_vs_g_iso[1];
  EXPECT_EQ(t.n_blocks, 6);
  EXPECT_EQ(t.reference_G, 2);
  EXPECT_FALSE(t.has_dense_runs);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0].D_ref, 2e9);
  ASSERT_EQ(t.rows[0].per_g.size(), 2u);
  EXPECT_NEAR(t.rows[0].per_g[1].loss, iso_loss(3.75, t.rows[0].F), 1e-12);
  EXPECT_EQ(t.rows[0].best_G, 8);
  EXPECT_TRUE(t.rows[0].distinguishable);  // 0.05 > 2·sqrt(2)·0.004

  // The whole program: terminal lines, report section, fit.json array, plot.
  const fs::path out = dir / "cli";
  ::testing::internal::CaptureStdout();
  const int rc = run_cli({"--points", o.points, "--out", out.string(), "--bootstrap", "0"});
  const std::string term = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, finemoe::kExitOk) << term;
  char line[512];
  std::snprintf(line, sizeof line,
                "  E 64 4×256 (budgets of G = 1): F %.3g: G = 16 (not distinguishable from G = 4); F %.3g: G = 16 "
                "(not distinguishable from G = 4); F %.3g: G = 4\n",
                s.rows[0].F, s.rows[1].F, s.rows[2].F);
  EXPECT_NE(term.find("final loss vs G at equal compute (expert_choice MoE runs"), std::string::npos) << term;
  EXPECT_NE(term.find(line), std::string::npos) << line << term;
  const std::string report = slurp(out / "report.md");
  const size_t same_d = report.find("## Final loss vs G per size and token budget");
  const size_t iso = report.find("## Final loss vs G at equal compute (interpolated in log F between a G's own runs)");
  ASSERT_NE(iso, std::string::npos) << report;
  ASSERT_NE(same_d, std::string::npos);
  EXPECT_LT(same_d, iso);
  EXPECT_EQ(report.find("\n## ", same_d + 1) + 1, iso);  // right after the same-D section
  EXPECT_NE(report.find("### E 64, size 4×256 (budgets: F of the G = 1 runs)"), std::string::npos);
  EXPECT_NE(report.find("| F (FLOPs) | D of the G = 1 run | G = 1 | G = 4 | G = 16 | dense | best G |"), std::string::npos);
  EXPECT_NE(report.find("### E 64, size 6×384 (budgets: F of the G = 2 runs)"), std::string::npos);
  EXPECT_EQ(report.find("size 8×512 (budgets"), std::string::npos);
  char row[640];
  std::snprintf(row, sizeof row,
                "| %.4g | 2e+09 | %.4f ± 0.0040 | %.4f ± 0.0040 | %.4f ± %.4f\\* **best** | %.4f ± 0.0040\\* | G = 16, "
                "not distinguishable from G = 4 (gap 0.0050 ≤ 2 SE %.4f) |",
                r1.F, iso_loss(c1, r1.F), iso_loss(c4, r1.F), iso_loss(c16, r1.F), r1.per_g[2].se, iso_loss(cd, r1.F),
                2 * r1.gap_se);
  EXPECT_NE(report.find(row), std::string::npos) << row << "\n" << report.substr(iso);
  std::snprintf(row, sizeof row,
                "| %.4g | 4e+09 | %.4f ± 0.0040 | %.4f ± %.4f\\* **best** | – | – | G = 4 (G = 1 next, gap 0.0300 > 2 "
                "SE %.4f) |",
                r2.F, iso_loss(c1, r2.F), iso_loss(c4, r2.F), se4_2, 2 * r2.gap_se);
  EXPECT_NE(report.find(row), std::string::npos) << row << "\n" << report.substr(iso);
  EXPECT_NE(report.find("In 2 of 4 budgets the best G is not distinguishable from the runner-up."), std::string::npos);
  const std::string json = slurp(out / "fit.json");
  const size_t arr = json.find("\"loss_vs_g_iso_flops\": [");
  ASSERT_NE(arr, std::string::npos);
  const std::string iso_json = json.substr(arr, json.find("\n  ]", arr) - arr);
  auto count = [](const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count(iso_json, "\"reference_G\""), 4u);                  // 3 + 1 budgets
  EXPECT_EQ(count(iso_json, "\"interpolated\": true"), 7u);           // G = 4, 16, dense; 16, dense; 4; 8
  EXPECT_EQ(count(iso_json, "\"interpolated\": false"), 5u);          // G = 1 x3, the G = 4 run, G = 2
  EXPECT_EQ(count(iso_json, "\"has_dense\": true"), 2u);
  EXPECT_EQ(count(iso_json, "\"distinguishable\": true"), 2u);
  char num[64];
  std::snprintf(num, sizeof num, "\"F\": %.10g,", s.rows[1].F);
  EXPECT_NE(iso_json.find(num), std::string::npos) << num;
  std::snprintf(num, sizeof num, "\"loss\": %.10g,", iso_loss(c4, s.rows[1].F));  // the exact G = 4 run
  EXPECT_NE(iso_json.find(num), std::string::npos) << num;
  EXPECT_NE(iso_json.find("\"best_G\": 16,"), std::string::npos);
  if (fs::exists("/usr/bin/gnuplot")) {
    EXPECT_TRUE(fs::exists(out / "plots" / "loss_vs_g_iso.png"));
    EXPECT_TRUE(fs::exists(out / "plots" / "loss_vs_g_iso.svg"));
    EXPECT_NE(report.find("](plots/loss_vs_g_iso.png)"), std::string::npos);
  }
  fs::remove_all(dir);
}
