// Sweep expansion: sizing by FLOPs against hand-computed numbers, naming,
// manifest, Slurm array text, writing, and spec errors that name the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "finemoe/error.hpp"
#include "finemoe/sweep.hpp"

using namespace finemoe;
namespace fs = std::filesystem;

namespace {

// Common base: batch 16 x seq 64 = 1024 tokens per step, E = 8.
const std::string kBase =
    "[model]\nseq_len = 64\nvocab_size = 512\n"
    "[moe]\nexperts = 8\ngroup_size = 256\n"
    "[train]\nbatch_size = 16\n";

SweepSpec spec_of(const std::string& sweep_section, const std::string& extra = "") {
  return parse_sweep_spec("[sweep]\nname = t\n" + sweep_section + kBase + extra, "test.ini", ".");
}

// Expects a ConfigError whose message contains every needle.
void expect_error(const std::string& text, std::initializer_list<std::string> needles) {
  try {
    auto spec = parse_sweep_spec(text, "bad.ini", ".");
    expand_sweep(spec, "/tmp/runs");
    FAIL() << "no error for spec:\n" << text;
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "message '" << msg << "' lacks '" << n << "'";
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
}

}  // namespace

// Hand computation (SCIENCE.md formulas), d = 64 * 2 = 128, n_blocks = 2, E = 8:
//   F/token = (12 d^2 * 6 + d E G * 14) * n_blocks
//     G=1: (1179648 + 14336) * 2 = 2387968
//     G=2: (1179648 + 28672) * 2 = 2416640
//     G=4: (1179648 + 57344) * 2 = 2473984
//   N = n_blocks d^2 (8E + 4) = 2 * 16384 * 68 = 2228224, N_active = 12 d^2 n_blocks = 393216
//   budget F = 2416640 * 1024 * 1000 = 2474639360000:
//     G=2: D = 1024000 = 1000 steps exactly
//     G=1: D = 1036295.03 -> 1012.007 steps -> 1012 -> D = 1036288
//     G=4: D = 1000264.90 ->  976.821 steps ->  977 -> D = 1000448
TEST(Sweep, FlopsBudgetSizesRunsByHand) {
  auto spec = spec_of("granularity = 1, 2, 4\nn_blocks = 2\nflops = 2474639360000\n");
  auto runs = expand_sweep(spec, "/tmp/runs");
  ASSERT_EQ(runs.size(), 3u);
  const int64_t want_steps[3] = {1012, 1000, 977};
  const double want_fpt[3] = {2387968, 2416640, 2473984};
  for (int i = 0; i < 3; ++i) {
    const auto& r = runs[i];
    EXPECT_EQ(r.config.model.d_model, 128);
    EXPECT_EQ(r.config.model.n_blocks, 2);
    EXPECT_EQ(r.config.moe.granularity, int64_t(1) << i);
    EXPECT_DOUBLE_EQ(r.counts.flops_per_token, want_fpt[i]);
    EXPECT_DOUBLE_EQ(r.counts.N, 2228224.0);
    EXPECT_DOUBLE_EQ(r.counts.N_active, 393216.0);
    EXPECT_EQ(r.steps, want_steps[i]);
    EXPECT_EQ(r.config.train.steps, want_steps[i]);
    EXPECT_DOUBLE_EQ(r.D, double(want_steps[i]) * 1024.0);
    EXPECT_DOUBLE_EQ(r.F, r.D * want_fpt[i]);
    EXPECT_EQ(r.config.run.dir, "/tmp/runs/" + r.name);
  }
  EXPECT_EQ(runs[1].name, "t-L2-d128-E8-G2-F2.47464e12");
  EXPECT_DOUBLE_EQ(runs[1].F, 2474639360000.0);  // exact budget when D divides evenly
}

TEST(Sweep, TokenBudgetAndDenseBaseline) {
  // tokens 1e6 -> 976.5625 steps -> 977 -> D = 1000448; dense d=128, L=2:
  // F/token = 6 * 12 d^2 n_blocks = 2359296 (no router term).
  auto spec = spec_of("granularity = 4\nn_blocks = 2\ntokens = 1e6\ndense = true\n");
  auto runs = expand_sweep(spec, "runs");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].name, "t-L2-d128-E8-G4-D1e6");
  EXPECT_EQ(runs[1].name, "t-L2-d128-dense-D1e6");
  for (const auto& r : runs) {
    EXPECT_EQ(r.steps, 977);
    EXPECT_DOUBLE_EQ(r.D, 1000448.0);
  }
  EXPECT_EQ(runs[1].config.model.ffn, Ffn::dense);
  EXPECT_DOUBLE_EQ(runs[1].counts.flops_per_token, 2359296.0);
  EXPECT_DOUBLE_EQ(runs[1].counts.N, 12.0 * 128 * 128 * 2);
  EXPECT_DOUBLE_EQ(runs[0].counts.flops_per_token, 2473984.0);

  auto only = expand_sweep(spec_of("n_blocks = 1, 2\ntokens = 1e6\ndense = only\n"), "runs");
  ASSERT_EQ(only.size(), 2u);
  for (const auto& r : only) EXPECT_TRUE(r.config.dense());
}

// max_flops leaves out exactly the grid points above it (realised F, by the
// same counting): d=64 L1 dense F/token = 6*12*64^2 = 294912; d=128 L2 dense
// 2359296 (above). tokens 1e6 -> 977 steps -> D = 1000448:
//   L1: F = 2.950e11, L2: F = 2.360e12; cap 1e12 keeps L1 only.
TEST(Sweep, MaxFlopsLeavesOutTheGridPointsAboveIt) {
  std::vector<std::pair<std::string, double>> capped;
  auto runs = expand_sweep(spec_of("n_blocks = 1, 2\ntokens = 1e6\ndense = only\nmax_flops = 1e12\n"), "r", &capped);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].name, "t-L1-d64-dense-D1e6");
  EXPECT_DOUBLE_EQ(runs[0].F, 1000448.0 * 294912.0);
  ASSERT_EQ(capped.size(), 1u);
  EXPECT_EQ(capped[0].first, "t-L2-d128-dense-D1e6");
  EXPECT_DOUBLE_EQ(capped[0].second, 1000448.0 * 2359296.0);
  // No cap: both.
  EXPECT_EQ(expand_sweep(spec_of("n_blocks = 1, 2\ntokens = 1e6\ndense = only\n"), "r").size(), 2u);
}

// A [slice.NAME] adds a grid: the main grid's keys and base config with the
// slice's own on top; its runs follow the main ones in the manifest.
TEST(Sweep, SlicesAddGridsWithTheirOwnKeys) {
  auto spec = spec_of("n_blocks = 1, 2\ngranularity = 1, 2\ntokens = 1e6\ndense = true\n",
                      "[slice.tc]\nn_blocks = 2\ngranularity = 1\ndense = false\nmoe.routing = token_choice\n"
                      "tokens = 2e6\n"
                      "[slice.big]\nn_blocks = 3\ndense = only\ntrain.lr = 5e-4\n");
  ASSERT_EQ(spec.slices.size(), 2u);
  auto runs = expand_sweep(spec, "/r");
  // main: 2 sizes x (2 G + dense) = 6; tc: 1; big: 1 (dense only, main's token budget).
  ASSERT_EQ(runs.size(), 8u);
  EXPECT_EQ(runs[5].name, "t-L2-d128-dense-D1e6");
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(runs[i].config.moe.routing, Routing::expert_choice) << runs[i].name;
    EXPECT_DOUBLE_EQ(runs[i].config.train.lr, spec.base.train.lr);
  }
  EXPECT_EQ(runs[6].name, "t-tc-L2-d128-E8-G1-D2e6");
  EXPECT_EQ(runs[6].config.moe.routing, Routing::token_choice);
  EXPECT_EQ(runs[6].steps, 1953);  // 2e6 / 1024 = 1953.125
  EXPECT_EQ(runs[6].config.run.dir, "/r/t-tc-L2-d128-E8-G1-D2e6");
  EXPECT_EQ(runs[7].name, "t-big-L3-d192-dense-D1e6");
  EXPECT_DOUBLE_EQ(runs[7].config.train.lr, 5e-4);
  EXPECT_EQ(runs[7].config.moe.routing, Routing::expert_choice);
  // The manifest lists every run, slices last.
  std::istringstream manifest(sweep_manifest(runs));
  std::string line;
  int lines = 0;
  while (std::getline(manifest, line)) ++lines;
  EXPECT_EQ(lines, 9);
}

TEST(Sweep, AspectRatioAndExplicitWidths) {
  auto runs = expand_sweep(spec_of("n_blocks = 1, 2, 3\ntokens = 1e6\n"), "r");
  ASSERT_EQ(runs.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(runs[i].config.model.n_blocks, i + 1);
    EXPECT_EQ(runs[i].config.model.d_model, 64 * (i + 1));
  }
  auto wide = expand_sweep(spec_of("n_blocks = 1, 2\nd_model = 128, 256\naspect_ratio = 32\ntokens = 1e6\n"), "r");
  ASSERT_EQ(wide.size(), 4u);
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const auto& r : wide) shapes.insert({r.config.model.d_model, r.config.model.n_blocks});
  EXPECT_EQ(shapes, (std::set<std::pair<int64_t, int64_t>>{{128, 1}, {256, 1}, {128, 2}, {256, 2}}));
  auto ar = expand_sweep(spec_of("n_blocks = 4\naspect_ratio = 32\ntokens = 1e6\n"), "r");
  EXPECT_EQ(ar[0].config.model.d_model, 128);
}

TEST(Sweep, GridNamesAreUniqueAndCountsMultiply) {
  // 2 sizes x 3 budgets x 2 E x 3 G x 2 seeds + dense (2 x 3 x 2) = 72 + 12.
  auto spec = spec_of(
      "n_blocks = 1, 2\nexperts = 4, 8\ngranularity = 1, 2, 4\nflops = 1e13, 2e13, 4e13\n"
      "seeds = 1, 2\ndense = true\n");
  auto runs = expand_sweep(spec, "r");
  ASSERT_EQ(runs.size(), 84u);
  std::set<std::string> names;
  for (const auto& r : runs) {
    EXPECT_TRUE(names.insert(r.name).second) << r.name;
    EXPECT_EQ(r.name.find('/'), std::string::npos);
    EXPECT_NE(r.name.find("-s" + std::to_string(r.config.train.seed)), std::string::npos) << r.name;
    // Every run realises its budget to within half a step of tokens.
    EXPECT_NEAR(r.F, r.budget, 0.5 * 1024 * r.counts.flops_per_token);
  }
}

TEST(Sweep, SpecOverridesAndBaseFile) {
  auto dir = fs::temp_directory_path() / "finemoe_sweep_base";
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "base.ini");
    f << "[model]\nseq_len = 32\n[train]\nbatch_size = 8\nlr = 0.005\n[moe]\nexperts = 4\ngroup_size = 64\n";
  }
  {
    std::ofstream f(dir / "spec.ini");
    f << "[sweep]\nname = b\nbase = base.ini   # relative to the spec\nn_blocks = 1\ntokens = 25600\n"
         "[train]\nlr = 0.002\n";
  }
  auto spec = load_sweep_spec((dir / "spec.ini").string());
  auto runs = expand_sweep(spec, "r");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].config.model.seq_len, 32);    // from the base
  EXPECT_EQ(runs[0].config.moe.experts, 4);       // from the base
  EXPECT_DOUBLE_EQ(runs[0].config.train.lr, 0.002);  // spec beats base
  EXPECT_EQ(runs[0].steps, 100);                  // 25600 / (8 * 32)
  fs::remove_all(dir);
}

TEST(Sweep, SweepNumberFormat) {
  EXPECT_EQ(sweep_number(1e15), "1e15");
  EXPECT_EQ(sweep_number(2.5e6), "2.5e6");
  EXPECT_EQ(sweep_number(512), "512");
  EXPECT_EQ(sweep_number(1e-5), "1e-5");
  EXPECT_EQ(sweep_number(3.2e16), "3.2e16");
}

TEST(Sweep, ManifestAndSbatch) {
  auto spec = spec_of("granularity = 1, 2\nn_blocks = 2\nflops = 2474639360000\n[slurm]\ntime = 00:10:00\nmax_parallel = 3\n"
                      "extra = --gpus-per-task=1 --constraint=x\n");
  auto runs = expand_sweep(spec, "/abs/runs");
  std::string tsv = sweep_manifest(runs);
  std::istringstream is(tsv);
  std::string line;
  std::getline(is, line);
  EXPECT_EQ(line, "name\tN\tN_active\tG\tE\tD\tF\tsteps\td_model\tn_blocks\tflops_per_token\tbudget");
  std::getline(is, line);
  EXPECT_EQ(line.substr(0, line.find('\t')), runs[0].name);
  std::getline(is, line);
  EXPECT_EQ(line, "t-L2-d128-E8-G2-F2.47464e12\t2228224\t393216\t2\t8\t1024000\t2.474639e+12\t1000\t128\t2\t2416640\tF=2.47464e12");
  EXPECT_FALSE(std::getline(is, line));

  std::string sb = sweep_sbatch(spec, runs, "/abs/runs", "/src/jobs/train.sbatch", "/build/moe-train");
  for (const std::string needle :
       {"#SBATCH --array=0-1%3\n", "#SBATCH --requeue\n", "#SBATCH --open-mode=append\n", "#SBATCH --signal=B:USR1@120\n",
        "#SBATCH --time=00:10:00\n", "#SBATCH --gpus-per-task=1\n", "#SBATCH --constraint=x\n", "#SBATCH --ntasks=1\n",
        "'t-L2-d128-E8-G1-F2.47464e12'", "exec bash '/src/jobs/train.sbatch'", "'/build/moe-train'",
        "#SBATCH --output=/abs/runs/logs/"})
    EXPECT_NE(sb.find(needle), std::string::npos) << needle << "\n" << sb;
}

TEST(Sweep, WriteIsIdempotentAndRefusesToClobber) {
  auto dir = fs::temp_directory_path() / "finemoe_sweep_write";
  fs::remove_all(dir);
  auto spec = spec_of("granularity = 1, 2\nn_blocks = 1\ntokens = 1e5\n");
  auto runs = expand_sweep(spec, dir.string());
  EXPECT_EQ(write_sweep(spec, runs, dir.string(), false), 2);
  for (const auto& r : runs) {
    std::ifstream f(dir / r.name / "config.ini");
    std::stringstream ss;
    ss << f.rdbuf();
    Config back = config_from_ini_text(ss.str(), "config.ini");
    EXPECT_EQ(back.to_ini(), r.config.to_ini());
    EXPECT_EQ(back.train.steps, 98);  // 1e5 / 1024 = 97.66 -> 98
    EXPECT_EQ(back.run.dir, (dir / r.name).string());
    back.validate(1);
  }
  EXPECT_TRUE(fs::exists(dir / "sweep.tsv"));
  EXPECT_TRUE(fs::exists(dir / "sweep_spec.ini"));
  EXPECT_EQ(write_sweep(spec, runs, dir.string(), false), 0);  // unchanged: nothing rewritten

  auto spec2 = spec_of("granularity = 1, 2\nn_blocks = 1\ntokens = 1e5\n", "[train]\nlr = 0.01\n");
  auto runs2 = expand_sweep(spec2, dir.string());
  try {
    write_sweep(spec2, runs2, dir.string(), false);
    FAIL() << "overwrote a different config";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("config.ini"), std::string::npos) << e.what();
  }
  EXPECT_EQ(write_sweep(spec2, runs2, dir.string(), true), 2);
  fs::remove_all(dir);
}

TEST(Sweep, BadSpecsNameTheKey) {
  const std::string base = kBase;
  expect_error("[sweep]\ngranularty = 2\ntokens = 1e6\n" + base, {"bad.ini", "sweep.granularty", "unknown"});
  expect_error("[sweep]\ngranularity = 2, x\ntokens = 1e6\n" + base, {"sweep.granularity", "'x'"});
  expect_error("[sweep]\ngranularity = 0\ntokens = 1e6\n" + base, {"sweep.granularity", "positive"});
  expect_error("[sweep]\nn_blocks = 2\nflops = 1e13\ntokens = 1e6\n" + base, {"sweep.tokens", "exactly one"});
  expect_error("[sweep]\nn_blocks = 2\n" + base, {"sweep.flops", "exactly one"});
  expect_error("[sweep]\nn_blocks = 2\nflops = -1e13\n" + base, {"sweep.flops", "'-1e13'"});
  expect_error("[sweep]\nn_blocks = 2\nflops = 1e6\n" + base, {"sweep.flops", "less than one step"});
  // G must divide 4*d_model = 512: 3 does not -> the config's own error names the key and the run.
  expect_error("[sweep]\nn_blocks = 2\ngranularity = 3\ntokens = 1e6\n" + base, {"moe.granularity", "run-L2-d128-E8-G3"});
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\n[model]\nfoo = 1\n" + base, {"model.foo"});
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\n[model]\nseq_len = abc\n", {"model.seq_len", "abc"});
  expect_error("[sweep]\nbase = /nonexistent/base.ini\nn_blocks = 2\ntokens = 1e6\n", {"sweep.base", "/nonexistent/base.ini"});
  expect_error("[sweep]\ndense = maybe\ntokens = 1e6\n" + base, {"sweep.dense", "maybe"});
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\nmax_flops = 1e9\n" + base, {"sweep.max_flops", "leaves no run"});
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\nmax_flops = 1e9, 2e9\n" + base, {"sweep.max_flops", "one number"});
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\nmax_flops = -1\n" + base, {"sweep.max_flops", "'-1'"});
  expect_error("[sweep]\ntokens = 1e6\n[slurm]\nnodes = 2\n" + base, {"slurm.nodes"});
  expect_error("[sweep]\ntokens = 1e6\ntokens = 2e6\n" + base, {"sweep.tokens", "twice"});
  expect_error("[sweep]\nname = a/b\ntokens = 1e6\n" + base, {"sweep.name"});
  expect_error("n_blocks = 2\n", {"outside a [section]"});
  // Two budgets equal to 6 digits would give two runs the same name.
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1000000, 1000000.1\n" + base, {"sweep.tokens", "named"});
  // Slices: unknown grid key, bad config key or value, per-sweep keys, bad names.
  const std::string main = "[sweep]\nn_blocks = 2\ntokens = 1e6\n" + base;
  expect_error(main + "[slice.tc]\ngranularty = 2\n", {"slice.tc.granularty", "unknown sweep key"});
  expect_error(main + "[slice.tc]\nmoe.routing = top2\n", {"bad.ini:13", "[slice.tc]", "moe.routing", "top2"});
  expect_error(main + "[slice.tc]\nmoe.foo = 1\n", {"[slice.tc]", "moe.foo"});
  expect_error(main + "[slice.tc]\nranks = 2\n", {"slice.tc.ranks", "one per sweep"});
  expect_error(main + "[slice.t c]\nn_blocks = 1\n", {"[slice.t c]", "letters, digits"});
  expect_error(main + "[slice.tc]\ngranularity = 3\n", {"moe.granularity", "run-tc-L2-d128-E8-G3"});
  // ranks: batch 16 over 3 ranks does not split (dense, so no group-size check comes first).
  expect_error("[sweep]\nn_blocks = 2\ntokens = 1e6\nranks = 3\ndense = only\n" + base, {"train.batch_size", "3 ranks"});
}
