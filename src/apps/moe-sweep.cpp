// moe-sweep: expand a grid spec into run configs sized by FLOPs, a manifest,
// and (optionally) a Slurm array script or a local sequential run. See --help.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "finemoe/app.hpp"
#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/sweep.hpp"

namespace fs = std::filesystem;

namespace {
const char* kUsage =
    "moe-sweep: expand a sweep spec (grid over G, E, model size and FLOPs/token budgets)\n"
    "into one config per run, sized by compute with the same counting as moe-train.\n\n"
    "Usage: moe-sweep --spec SPEC.ini --out RUNS_DIR [--print] [--slurm | --local] [--force]\n"
    "                 [--section.key value ...]\n\n"
    "Writes RUNS_DIR/NAME/config.ini (resolved, validated; train.steps = D/(batch_size*seq_len),\n"
    "run.dir = RUNS_DIR/NAME), RUNS_DIR/sweep.tsv (name N N_active G E D F steps ...) and\n"
    "RUNS_DIR/sweep_spec.ini. --slurm also writes RUNS_DIR/sweep.sbatch, an array job whose\n"
    "task i runs config i through jobs/train.sbatch (submit it with sbatch). --local runs\n"
    "every config now, one after another, with jobs/run_local.sh (completed runs are\n"
    "skipped, interrupted ones resume). --section.key value overrides the spec for every run.\n"
    "Spec format: docs/cluster.md and include/finemoe/sweep.hpp; examples in input/demo-sweep.ini, input/sweep-*.ini.\n\n"
    "Exit codes: 0 ok | 1 I/O failure | 2 bad spec, key or command line | with --local, the\n"
    "exit code of jobs/run_local.sh.";

// Directory of this executable (moe-train is built next to it).
fs::path exe_dir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : p.parent_path();
}

// jobs/ of the source tree: --jobs-dir, $FINEMOE_JOBS_DIR, or next to the build
// tree (build/moe-sweep, build/NAME/moe-sweep) or an install (share/finemoe/jobs).
fs::path find_jobs_dir(const std::string& given) {
  std::vector<fs::path> cands;
  if (!given.empty()) {
    cands.push_back(given);
  } else {
    if (const char* e = std::getenv("FINEMOE_JOBS_DIR")) cands.push_back(e);
    fs::path ed = exe_dir();
    if (!ed.empty()) {
      cands.push_back(ed / ".." / "jobs");
      cands.push_back(ed / ".." / ".." / "jobs");
      cands.push_back(ed / ".." / "share" / "finemoe" / "jobs");
    }
    cands.push_back(fs::current_path() / "jobs");
  }
  for (const auto& c : cands)
    if (fs::exists(c / "train.sbatch")) return fs::canonical(c);
  throw finemoe::ConfigError(
      given.empty() ? "cannot find jobs/train.sbatch next to the build tree; pass --jobs-dir DIR or set FINEMOE_JOBS_DIR"
                    : "--jobs-dir: '" + given + "/train.sbatch' not found");
}

std::string find_moe_train() {
  if (const char* e = std::getenv("FINEMOE_TRAIN")) return e;
  fs::path p = exe_dir() / "moe-train";
  if (fs::exists(p)) return p.string();
  return "moe-train";  // from PATH on the compute node
}

// `--section.key value` pairs given on the command line, in order (CLI beats
// the spec). parse_args has already checked that the keys exist.
std::vector<std::pair<std::string, std::string>> cli_overrides(int argc, char** argv) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a.find('.') == std::string::npos) continue;
    std::string key = a.substr(2), value;
    auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    }
    out.emplace_back(key, value);
  }
  return out;
}

int run(int argc, char** argv) {
  using finemoe::AppOption;
  const std::vector<AppOption> opts = {
      {"spec", "sweep spec (INI), see docs/cluster.md", "", true},
      {"out", "runs directory to write", "", true},
      {"print", "print the manifest of the expanded runs and exit without writing", "", false},
      {"slurm", "also write RUNS_DIR/sweep.sbatch (Slurm array, one task per run)", "", false},
      {"local", "after writing, run every config now with jobs/run_local.sh", "", false},
      {"force", "overwrite existing config.ini files that differ", "", false},
      {"jobs-dir", "directory holding train.sbatch and run_local.sh (default: found next to the build)", "", true},
  };
  finemoe::ParsedArgs args = finemoe::parse_args(argc, argv, kUsage, opts);
  if (args.help) {
    std::cout << args.help_text << std::endl;
    return finemoe::kExitOk;
  }
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--config" || std::string(argv[i]).rfind("--config=", 0) == 0)
      throw finemoe::ConfigError("--config: moe-sweep takes the base config from the spec's 'sweep.base' key");
  const std::string spec_path = args.app["spec"], out = args.app["out"];
  if (spec_path.empty()) throw finemoe::ConfigError("--spec is required (see --help)");
  const bool print_only = args.app.count("print") && args.app["print"] == "1";
  const bool slurm = args.app.count("slurm") && args.app["slurm"] == "1";
  const bool local = args.app.count("local") && args.app["local"] == "1";
  const bool force = args.app.count("force") && args.app["force"] == "1";
  if (out.empty() && !print_only) throw finemoe::ConfigError("--out is required (see --help)");
  if (slurm && local) throw finemoe::ConfigError("--slurm and --local: choose one");

  finemoe::SweepSpec spec = finemoe::load_sweep_spec(spec_path);
  for (const auto& [k, v] : cli_overrides(argc, argv)) finemoe::set_config_value(spec.base, k, v);

  const std::string runs_dir = fs::absolute(out.empty() ? fs::path("runs") : fs::path(out)).lexically_normal().string();
  std::vector<std::pair<std::string, double>> capped;
  const auto runs = finemoe::expand_sweep(spec, runs_dir, &capped);
  for (const auto& [name, F] : capped)
    std::fprintf(stderr, "moe-sweep: left out %s: %.4g FLOPs > sweep.max_flops %.4g\n", name.c_str(), F,
                 spec.max_flops);
  if (print_only) {
    std::cout << finemoe::sweep_manifest(runs);
    return finemoe::kExitOk;
  }
  // Locate helper scripts before writing anything, so a missing jobs/ dir
  // fails without side effects.
  fs::path jobs;
  if (slurm || local) jobs = find_jobs_dir(args.app["jobs-dir"]);
  const int written = finemoe::write_sweep(spec, runs, runs_dir, force);
  std::printf("moe-sweep: %zu runs (%d config files written, %zu unchanged) in %s; manifest %s/sweep.tsv\n",
              runs.size(), written, runs.size() - size_t(written), runs_dir.c_str(), runs_dir.c_str());
  const std::string moe_train = find_moe_train();
  if (slurm) {
    const std::string script = runs_dir + "/sweep.sbatch";
    const std::string text = finemoe::sweep_sbatch(spec, runs, runs_dir, (jobs / "train.sbatch").string(), moe_train);
    FILE* f = std::fopen(script.c_str(), "w");
    if (!f || std::fputs(text.c_str(), f) < 0 || std::fclose(f) != 0)
      throw finemoe::Error("cannot write '" + script + "'");
    std::printf("moe-sweep: Slurm array of %zu tasks: sbatch %s\n", runs.size(), script.c_str());
  }
  if (local) {
    std::fflush(stdout);
    setenv("FINEMOE_TRAIN", moe_train.c_str(), 0);
    const std::string runner = (jobs / "run_local.sh").string(), ranks = std::to_string(spec.ranks);
    execl("/bin/bash", "bash", runner.c_str(), runs_dir.c_str(), "--ranks", ranks.c_str(), (char*)nullptr);
    throw finemoe::Error("cannot run '" + runner + "'");
  }
  return finemoe::kExitOk;
}
}  // namespace

int main(int argc, char** argv) {
  return finemoe::run_app("moe-sweep", [&]() -> int {
    return run(argc, argv);
  });
}
