// Sweep generator: spec parsing, grid expansion, manifest and Slurm array.
// Sizing by compute goes through count_model() only (counting.hpp), so a
// sweep's F agrees with the trainer's banner and moe-analyze's tables.
#include "finemoe/sweep.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "finemoe/error.hpp"

namespace fs = std::filesystem;

namespace finemoe {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// Values of a list key: separated by commas and/or whitespace.
std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : v) {
    if (ch == ',' || ch == ' ' || ch == '\t') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

[[noreturn]] void spec_error(const std::string& origin, const std::string& key, const std::string& what) {
  throw ConfigError(origin + ": key '" + key + "': " + what);
}

int64_t parse_pos_int(const std::string& origin, const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x <= 0)
    spec_error(origin, key, "expected a positive integer, got '" + v + "'");
  return x;
}

int64_t parse_nonneg_int(const std::string& origin, const std::string& key, const std::string& v) {
  if (v == "0") return 0;
  return parse_pos_int(origin, key, v);
}

double parse_pos_double(const std::string& origin, const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x) || x <= 0)
    spec_error(origin, key, "expected a positive number, got '" + v + "'");
  return x;
}

std::vector<int64_t> int_list(const std::string& origin, const std::string& key, const std::string& v) {
  std::vector<int64_t> out;
  for (const auto& s : split_list(v)) out.push_back(parse_pos_int(origin, key, s));
  if (out.empty()) spec_error(origin, key, "empty list");
  return out;
}

std::vector<double> double_list(const std::string& origin, const std::string& key, const std::string& v) {
  std::vector<double> out;
  for (const auto& s : split_list(v)) out.push_back(parse_pos_double(origin, key, s));
  if (out.empty()) spec_error(origin, key, "empty list");
  return out;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path);
  if (!f) throw ConfigError(what + ": cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct IniEntry {
  std::string section, key, value;
  int line;
};

// Minimal INI reader: [section], key = value, '#' or ';' comments. Keeps
// order and line numbers for messages.
std::vector<IniEntry> parse_ini(const std::string& text, const std::string& origin) {
  std::vector<IniEntry> out;
  std::istringstream is(text);
  std::string line, section;
  int n = 0;
  while (std::getline(is, line)) {
    ++n;
    auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty() || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') throw ConfigError(origin + ":" + std::to_string(n) + ": malformed section header '" + line + "'");
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw ConfigError(origin + ":" + std::to_string(n) + ": expected 'key = value', got '" + line + "'");
    if (section.empty())
      throw ConfigError(origin + ":" + std::to_string(n) + ": key '" + trim(line.substr(0, eq)) + "' outside a [section]");
    out.push_back({section, trim(line.substr(0, eq)), trim(line.substr(eq + 1)), n});
  }
  return out;
}

}  // namespace

std::string sweep_number(double x) {
  char buf[64];
  const double a = std::fabs(x);
  if (a != 0 && (a >= 1e4 || a < 1e-3)) {
    // Scientific with at most 6 significant digits, no '+', no padding:
    // 1e+15 -> "1e15", 2.5e+06 -> "2.5e6", 1e-05 -> "1e-5".
    std::snprintf(buf, sizeof buf, "%.5e", x);
    std::string s = buf;
    auto e = s.find('e');
    std::string mant = s.substr(0, e), exp = s.substr(e + 1);
    if (mant.find('.') != std::string::npos) {
      mant.erase(mant.find_last_not_of('0') + 1);
      if (mant.back() == '.') mant.pop_back();
    }
    std::string sign = exp[0] == '-' ? "-" : "";
    exp = exp.substr(1);
    exp.erase(0, std::min(exp.find_first_not_of('0'), exp.size() - 1));
    return mant + "e" + sign + exp;
  }
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

namespace {

// The grid keys of [sweep], shared by the main grid and its [slice.*]
// sections. `full` is the key as the user wrote it, for messages.
void apply_grid_key(SweepSpec& spec, const std::string& origin, const std::string& full, const std::string& key,
                    const std::string& value) {
  if (key == "granularity") {
    spec.granularity = int_list(origin, full, value);
  } else if (key == "experts") {
    spec.experts = int_list(origin, full, value);
  } else if (key == "n_blocks") {
    spec.n_blocks = int_list(origin, full, value);
  } else if (key == "d_model") {
    spec.d_model = int_list(origin, full, value);
  } else if (key == "aspect_ratio") {
    spec.aspect_ratio = parse_pos_int(origin, full, value);
  } else if (key == "flops") {
    spec.flops = double_list(origin, full, value);
  } else if (key == "tokens") {
    spec.tokens = double_list(origin, full, value);
  } else if (key == "max_flops") {
    const auto v = double_list(origin, full, value);
    if (v.size() != 1) spec_error(origin, full, "must be one number (FLOPs), got '" + value + "'");
    spec.max_flops = v[0];
  } else if (key == "seeds") {
    spec.seeds = int_list(origin, full, value);
  } else if (key == "dense") {
    if (value != "true" && value != "false" && value != "only")
      spec_error(origin, full, "must be true, false or only, got '" + value + "'");
    spec.dense = value;
  } else {
    spec_error(origin, full,
               "unknown sweep key (known: name base granularity experts n_blocks d_model aspect_ratio "
               "flops tokens max_flops dense seeds ranks)");
  }
}

// The grid of one [slice.NAME]: the main grid and base config with the
// slice's keys on top. Its runs are named MAIN-NAME-...; a budget key
// replaces the main grid's budgets of either kind.
SweepSpec slice_spec(const SweepSpec& main, const SweepSlice& slice) {
  SweepSpec s = main;
  s.slices.clear();
  s.name = main.name + "-" + slice.name;
  const std::string origin = main.origin;
  for (const auto& e : slice.entries)
    if (e.key == "flops" || e.key == "tokens") s.flops.clear(), s.tokens.clear();
  for (const auto& e : slice.entries) {
    const std::string full = "slice." + slice.name + "." + e.key;
    if (e.key.find('.') != std::string::npos) {
      try {
        set_config_value(s.base, e.key, e.value);
      } catch (const ConfigError& err) {
        throw ConfigError(origin + ":" + std::to_string(e.line) + ": [slice." + slice.name + "]: " + err.what());
      }
    } else if (e.key == "name" || e.key == "base" || e.key == "ranks") {
      spec_error(origin, full,
                 "is one per sweep, not per slice (a slice sets grid keys, e.g. n_blocks, and config keys, "
                 "e.g. moe.routing)");
    } else {
      apply_grid_key(s, origin, full, e.key, e.value);
    }
  }
  return s;
}

}  // namespace

SweepSpec parse_sweep_spec(const std::string& text, const std::string& origin, const std::string& base_dir) {
  SweepSpec spec;
  spec.origin = origin;
  spec.text = text;
  const auto entries = parse_ini(text, origin);

  // The base config first, so that the spec's own [model]/[moe]/... keys
  // override it regardless of where `base =` appears.
  bool have_base = false;
  for (const auto& e : entries) {
    if (e.section == "sweep" && e.key == "base" && !e.value.empty()) {
      fs::path p = e.value;
      if (p.is_relative()) p = fs::path(base_dir) / p;
      spec.base = config_from_ini_text(read_file(p.string(), origin + ": key 'sweep.base'"), p.string());
      have_base = true;
    }
  }
  (void)have_base;

  std::set<std::string> seen;
  for (const auto& e : entries) {
    const std::string full = e.section + "." + e.key;
    if (!seen.insert(full).second) spec_error(origin, full, "given twice (line " + std::to_string(e.line) + ")");
    if (e.section == "sweep") {
      if (e.key == "base") continue;
      if (e.key == "name") {
        if (e.value.empty() || e.value.find_first_of("/ \t") != std::string::npos)
          spec_error(origin, full, "must be a non-empty name without '/' or spaces, got '" + e.value + "'");
        spec.name = e.value;
      } else if (e.key == "ranks") {
        spec.ranks = parse_pos_int(origin, full, e.value);
      } else {
        apply_grid_key(spec, origin, full, e.key, e.value);
      }
    } else if (e.section.rfind("slice.", 0) == 0) {
      // Collected here, applied by expand_sweep on top of the finished main
      // grid (and any command-line overrides of the base).
      const std::string slice = e.section.substr(6);
      if (slice.empty() || slice.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                               std::string::npos)
        throw ConfigError(origin + ":" + std::to_string(e.line) + ": section [" + e.section +
                          "]: a slice name is letters, digits and '_' only");
      auto it = std::find_if(spec.slices.begin(), spec.slices.end(),
                             [&](const SweepSlice& s) { return s.name == slice; });
      if (it == spec.slices.end()) it = spec.slices.insert(spec.slices.end(), SweepSlice{slice, {}});
      it->entries.push_back({e.key, e.value, e.line});
    } else if (e.section == "slurm") {
      if (e.key == "time") {
        spec.slurm.time = e.value;
      } else if (e.key == "partition") {
        spec.slurm.partition = e.value;
      } else if (e.key == "account") {
        spec.slurm.account = e.value;
      } else if (e.key == "cpus_per_task") {
        spec.slurm.cpus_per_task = parse_nonneg_int(origin, full, e.value);
      } else if (e.key == "max_parallel") {
        spec.slurm.max_parallel = parse_nonneg_int(origin, full, e.value);
      } else if (e.key == "signal_seconds") {
        spec.slurm.signal_seconds = parse_pos_int(origin, full, e.value);
      } else if (e.key == "extra") {
        spec.slurm.extra = e.value;
      } else {
        spec_error(origin, full,
                   "unknown slurm key (known: time partition account cpus_per_task max_parallel "
                   "signal_seconds extra)");
      }
    } else {
      // A config key applied to every run; set_config_value names unknown keys.
      try {
        set_config_value(spec.base, full, e.value);
      } catch (const ConfigError& err) {
        throw ConfigError(origin + ":" + std::to_string(e.line) + ": " + err.what());
      }
    }
  }
  if (spec.flops.empty() == spec.tokens.empty())
    spec_error(origin, spec.flops.empty() ? "sweep.flops" : "sweep.tokens",
               "give exactly one of sweep.flops (FLOPs budgets) or sweep.tokens (token budgets)");
  for (const auto& sl : spec.slices) (void)slice_spec(spec, sl);  // bad slice keys fail here, naming the key
  return spec;
}

SweepSpec load_sweep_spec(const std::string& path) {
  std::string text = read_file(path, "--spec");
  fs::path dir = fs::path(path).parent_path();
  return parse_sweep_spec(text, path, dir.empty() ? "." : dir.string());
}

namespace {

// One grid (the main one or a slice's), without its slices.
std::vector<SweepRun> expand_grid(const SweepSpec& spec, const std::string& runs_dir,
                                  std::vector<std::pair<std::string, double>>* capped) {
  const Config& base = spec.base;
  // Axes default to the base config's single value.
  std::vector<int64_t> Es = spec.experts.empty() ? std::vector<int64_t>{base.moe.experts} : spec.experts;
  std::vector<int64_t> Gs = spec.granularity.empty() ? std::vector<int64_t>{base.moe.granularity} : spec.granularity;
  std::vector<uint64_t> seeds;
  if (spec.seeds.empty())
    seeds.push_back(base.train.seed);
  else
    for (auto s : spec.seeds) seeds.push_back(uint64_t(s));
  const bool multi_seed = seeds.size() > 1;

  // Model sizes: (d_model, n_blocks) pairs.
  std::vector<std::pair<int64_t, int64_t>> sizes;
  if (spec.d_model.empty()) {
    std::vector<int64_t> Ls = spec.n_blocks.empty() ? std::vector<int64_t>{base.model.n_blocks} : spec.n_blocks;
    for (auto L : Ls) sizes.emplace_back(spec.aspect_ratio * L, L);
  } else {
    std::vector<int64_t> Ls = spec.n_blocks.empty() ? std::vector<int64_t>{base.model.n_blocks} : spec.n_blocks;
    for (auto L : Ls)
      for (auto d : spec.d_model) sizes.emplace_back(d, L);
  }
  const bool by_flops = !spec.flops.empty();
  const std::vector<double>& budgets = by_flops ? spec.flops : spec.tokens;
  const std::string budget_key = by_flops ? "sweep.flops" : "sweep.tokens";

  std::vector<SweepRun> runs;
  std::set<std::string> names;
  auto add = [&](int64_t d, int64_t L, bool dense, int64_t E, int64_t G, double budget, uint64_t seed) {
    SweepRun r;
    Config c = base;
    c.model.d_model = d;
    c.model.n_blocks = L;
    c.model.ffn = dense ? Ffn::dense : Ffn::moe;
    if (!dense) {
      c.moe.experts = E;
      c.moe.granularity = G;
    }
    c.train.seed = seed;
    std::string name = spec.name + "-L" + std::to_string(L) + "-d" + std::to_string(d) +
                       (dense ? std::string("-dense") : "-E" + std::to_string(E) + "-G" + std::to_string(G)) +
                       (by_flops ? "-F" : "-D") + sweep_number(budget) +
                       (multi_seed ? "-s" + std::to_string(seed) : "");
    if (!names.insert(name).second)
      spec_error(spec.origin, budget_key,
                 "two runs would both be named '" + name + "' (budgets or sizes equal to 6 digits?)");
    r.counts = count_model(c.shape());
    const double tokens_per_step = double(c.train.batch_size) * double(c.model.seq_len);
    const double D_target = by_flops ? budget / r.counts.flops_per_token : budget;
    r.steps = std::llround(D_target / tokens_per_step);
    if (r.steps < 1)
      spec_error(spec.origin, budget_key,
                 "budget " + sweep_number(budget) + " gives run '" + name + "' only " + sweep_number(D_target) +
                     " tokens, less than one step of train.batch_size * model.seq_len = " +
                     sweep_number(tokens_per_step) + " tokens");
    c.train.steps = r.steps;
    c.run.dir = (fs::path(runs_dir) / name).string();
    try {
      c.validate(int(spec.ranks));
    } catch (const ConfigError& err) {
      throw ConfigError(spec.origin + ": run '" + name + "': " + err.what());
    }
    r.name = name;
    r.config = c;
    r.budget = budget;
    r.budget_is_flops = by_flops;
    r.D = double(r.steps) * tokens_per_step;
    r.F = r.D * r.counts.flops_per_token;
    if (spec.max_flops > 0 && r.F > spec.max_flops) {
      if (capped) capped->emplace_back(r.name, r.F);
      return;
    }
    runs.push_back(std::move(r));
  };

  for (auto [d, L] : sizes)
    for (double budget : budgets)
      for (uint64_t seed : seeds) {
        if (spec.dense != "only")
          for (auto E : Es)
            for (auto G : Gs) add(d, L, false, E, G, budget, seed);
        if (spec.dense != "false") add(d, L, true, 1, 1, budget, seed);
      }
  if (runs.empty() && spec.max_flops > 0)
    spec_error(spec.origin, "sweep.max_flops",
               sweep_number(spec.max_flops) + " leaves no run of '" + spec.name + "': every grid point needs more FLOPs");
  return runs;
}

}  // namespace

std::vector<SweepRun> expand_sweep(const SweepSpec& spec, const std::string& runs_dir,
                                   std::vector<std::pair<std::string, double>>* capped) {
  std::vector<SweepRun> runs = expand_grid(spec, runs_dir, capped);
  std::set<std::string> names;
  for (const auto& r : runs) names.insert(r.name);
  for (const auto& sl : spec.slices)
    for (auto& r : expand_grid(slice_spec(spec, sl), runs_dir, capped)) {
      if (!names.insert(r.name).second)
        throw ConfigError(spec.origin + ": [slice." + sl.name + "]: run '" + r.name +
                          "' is already a run of the sweep (rename the slice)");
      runs.push_back(std::move(r));
    }
  return runs;
}

std::string sweep_manifest(const std::vector<SweepRun>& runs) {
  std::ostringstream os;
  os << "name\tN\tN_active\tG\tE\tD\tF\tsteps\td_model\tn_blocks\tflops_per_token\tbudget\n";
  char buf[512];
  for (const auto& r : runs) {
    const auto s = r.config.shape();
    std::snprintf(buf, sizeof buf, "%s\t%.0f\t%.0f\t%lld\t%lld\t%.0f\t%.6e\t%lld\t%lld\t%lld\t%.0f\t%s%s\n",
                  r.name.c_str(), r.counts.N, r.counts.N_active, (long long)s.granularity,
                  (long long)s.expansion, r.D, r.F, (long long)r.steps, (long long)s.d_model,
                  (long long)s.n_blocks, r.counts.flops_per_token, r.budget_is_flops ? "F=" : "D=",
                  sweep_number(r.budget).c_str());
    os << buf;
  }
  return os.str();
}

namespace {
// Single-quotes a string for bash.
std::string shq(const std::string& s) {
  std::string out = "'";
  for (char ch : s) {
    if (ch == '\'')
      out += "'\\''";
    else
      out += ch;
  }
  return out + "'";
}
}  // namespace

std::string sweep_sbatch(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& runs_dir,
                         const std::string& train_sbatch, const std::string& moe_train) {
  std::ostringstream os;
  const auto& sl = spec.slurm;
  os << "#!/usr/bin/env bash\n"
     << "# Generated by moe-sweep from " << spec.origin << ": " << runs.size() << " runs, one array task each.\n"
     << "# Submit:  sbatch " << runs_dir << "/sweep.sbatch\n"
     << "# Task i trains runs[i] with " << train_sbatch << "\n"
     << "# (preemption/time limit: checkpoint, exit 75, requeue, resume from LATEST).\n"
     << "#SBATCH --job-name=" << spec.name << "\n"
     << "#SBATCH --array=0-" << (runs.empty() ? 0 : runs.size() - 1);
  if (sl.max_parallel > 0) os << "%" << sl.max_parallel;
  os << "\n"
     << "#SBATCH --output=" << runs_dir << "/logs/%x-%A_%a.out\n"
     << "#SBATCH --open-mode=append\n"
     << "#SBATCH --requeue\n"
     << "#SBATCH --signal=B:USR1@" << sl.signal_seconds << "\n"
     << "#SBATCH --ntasks=" << spec.ranks << "\n";
  if (sl.cpus_per_task > 0) os << "#SBATCH --cpus-per-task=" << sl.cpus_per_task << "\n";
  if (!sl.time.empty()) os << "#SBATCH --time=" << sl.time << "\n";
  if (!sl.partition.empty()) os << "#SBATCH --partition=" << sl.partition << "\n";
  if (!sl.account.empty()) os << "#SBATCH --account=" << sl.account << "\n";
  for (const auto& opt : split_list(sl.extra)) os << "#SBATCH " << opt << "\n";
  os << "\nset -u\nRUNS=(\n";
  for (const auto& r : runs) os << "  " << shq(r.name) << "\n";
  os << ")\n"
     << "RUNS_DIR=" << shq(runs_dir) << "\n"
     << "TASK=${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch}\n"
     << "NAME=${RUNS[$TASK]:?array task $TASK has no run (only ${#RUNS[@]} runs)}\n"
     << "export FINEMOE_TRAIN=${FINEMOE_TRAIN:-" << shq(moe_train) << "}\n"
     << "echo \"[sweep.sbatch] array task $TASK -> $NAME\"\n"
     << "# exec: train.sbatch becomes this batch shell, so Slurm's signals reach its trap.\n"
     << "exec bash " << shq(train_sbatch) << " \"$RUNS_DIR/$NAME/config.ini\"\n";
  return os.str();
}

int write_sweep(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::string& runs_dir, bool force) {
  auto write_text = [](const fs::path& p, const std::string& text) {
    // Temp + rename: a half-written config never looks valid.
    fs::path tmp = p;
    tmp += ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      if (!f) throw Error("cannot write '" + tmp.string() + "'");
      f << text;
      f.flush();
      if (!f) throw Error("cannot write '" + tmp.string() + "' (disk full?)");
    }
    std::error_code ec;
    fs::rename(tmp, p, ec);
    if (ec) throw Error("cannot rename '" + tmp.string() + "' to '" + p.string() + "': " + ec.message());
  };
  std::error_code ec;
  fs::create_directories(fs::path(runs_dir) / "logs", ec);
  if (ec) throw Error("cannot create runs directory '" + runs_dir + "': " + ec.message());
  // Check every existing config before writing any, so a refused sweep
  // changes nothing.
  for (const auto& r : runs) {
    fs::path p = fs::path(runs_dir) / r.name / "config.ini";
    if (!force && fs::exists(p) && read_file(p.string(), "existing run") != r.config.to_ini())
      throw ConfigError("'" + p.string() +
                        "' exists with a different config (a run may be in progress there); "
                        "use another --out or --force to overwrite");
  }
  int written = 0;
  for (const auto& r : runs) {
    fs::path dir = fs::path(runs_dir) / r.name;
    fs::create_directories(dir, ec);
    if (ec) throw Error("cannot create run directory '" + dir.string() + "': " + ec.message());
    fs::path p = dir / "config.ini";
    const std::string ini = r.config.to_ini();
    if (fs::exists(p) && read_file(p.string(), "existing run") == ini) continue;
    write_text(p, ini);
    ++written;
  }
  write_text(fs::path(runs_dir) / "sweep.tsv", sweep_manifest(runs));
  write_text(fs::path(runs_dir) / "sweep_spec.ini", spec.text);
  return written;
}

}  // namespace finemoe
