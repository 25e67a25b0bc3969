#include "finemoe/config.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <functional>
#include <sstream>

#include "finemoe/error.hpp"

namespace po = boost::program_options;

namespace finemoe {
namespace {

// ---- typed conversion with errors that name the key -------------------------
int64_t to_int(const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    throw ConfigError("config key '" + key + "': expected an integer, got '" + v + "'");
  return x;
}
uint64_t to_uint(const std::string& key, const std::string& v) {
  int64_t x = to_int(key, v);
  if (x < 0) throw ConfigError("config key '" + key + "': expected a non-negative integer, got '" + v + "'");
  return uint64_t(x);
}
double to_double(const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x))
    throw ConfigError("config key '" + key + "': expected a number, got '" + v + "'");
  return x;
}
bool to_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw ConfigError("config key '" + key + "': expected true/false, got '" + v + "'");
}
std::string fmt_double(double x) {
  std::ostringstream os;
  os.precision(17);
  os << x;
  return os.str();
}

// ---- enum keys: ONE table of names per enum -----------------------------------
template <typename E>
using NameTable = std::vector<std::pair<E, const char*>>;
const NameTable<Ffn>& enum_names(Ffn) {
  static const NameTable<Ffn> t = {{Ffn::moe, "moe"}, {Ffn::dense, "dense"}};
  return t;
}
const NameTable<Routing>& enum_names(Routing) {
  static const NameTable<Routing> t = {{Routing::expert_choice, "expert_choice"}, {Routing::token_choice, "token_choice"}};
  return t;
}
const NameTable<PrecisionChoice>& enum_names(PrecisionChoice) {
  static const NameTable<PrecisionChoice> t = {
      {PrecisionChoice::fp32, "fp32"}, {PrecisionChoice::bf16, "bf16"}, {PrecisionChoice::automatic, "auto"}};
  return t;
}
const NameTable<Fp32EngineChoice>& enum_names(Fp32EngineChoice) {
  static const NameTable<Fp32EngineChoice> t = {{Fp32EngineChoice::automatic, "auto"},
                                                {Fp32EngineChoice::openblas, "openblas"},
                                                {Fp32EngineChoice::onednn, "onednn"}};
  return t;
}
const NameTable<DataSource>& enum_names(DataSource) {
  static const NameTable<DataSource> t = {{DataSource::synthetic, "synthetic"}, {DataSource::shards, "shards"}};
  return t;
}
const NameTable<DeviceChoice>& enum_names(DeviceChoice) {
  static const NameTable<DeviceChoice> t = {
      {DeviceChoice::cpu, "cpu"}, {DeviceChoice::cuda, "cuda"}, {DeviceChoice::automatic, "auto"}};
  return t;
}

template <typename E>
std::string enum_name(E v) {
  for (const auto& [e, name] : enum_names(v))
    if (e == v) return name;
  return "?";  // unreachable: every enumerator is in its table (test_config checks the round trip)
}

// `v` parsed as the enum of `like`; ConfigError naming the key and the choices.
template <typename E>
E parse_enum(const std::string& key, const std::string& v, E like) {
  std::string choices;
  for (const auto& [e, name] : enum_names(like)) {
    if (v == name) return e;
    choices += std::string(choices.empty() ? "" : ", ") + name;
  }
  throw ConfigError("config key '" + key + "': must be one of " + choices + ", got '" + v + "'");
}

struct KeyDef {
  std::string key;
  std::string help;
  std::function<std::string(const Config&)> get;
  std::function<void(Config&, const std::string&)> set;
};

#define FM_INT(sec, name, help)                                                        \
  KeyDef{#sec "." #name, help, [](const Config& c) { return std::to_string(c.sec.name); }, \
         [](Config& c, const std::string& v) { c.sec.name = to_int(#sec "." #name, v); }}
#define FM_UINT(sec, name, help)                                                       \
  KeyDef{#sec "." #name, help, [](const Config& c) { return std::to_string(c.sec.name); }, \
         [](Config& c, const std::string& v) { c.sec.name = to_uint(#sec "." #name, v); }}
#define FM_DBL(sec, name, help)                                                        \
  KeyDef{#sec "." #name, help, [](const Config& c) { return fmt_double(c.sec.name); },     \
         [](Config& c, const std::string& v) { c.sec.name = to_double(#sec "." #name, v); }}
#define FM_STR(sec, name, help)                                          \
  KeyDef{#sec "." #name, help, [](const Config& c) { return c.sec.name; }, \
         [](Config& c, const std::string& v) { c.sec.name = v; }}
// A key whose value is one of the names in enum_names(E) below.
#define FM_ENUM(sec, name, help)                                                                  \
  KeyDef{#sec "." #name, help, [](const Config& c) { return config_name(c.sec.name); },           \
         [](Config& c, const std::string& v) { c.sec.name = parse_enum(#sec "." #name, v, c.sec.name); }}
#define FM_BOOL(sec, name, help)                                                                 \
  KeyDef{#sec "." #name, help, [](const Config& c) { return std::string(c.sec.name ? "true" : "false"); }, \
         [](Config& c, const std::string& v) { c.sec.name = to_bool(#sec "." #name, v); }}

const std::vector<KeyDef>& schema() {
  static const std::vector<KeyDef> keys = {
      FM_INT(model, d_model, "model width d (multiple of model.head_dim)"),
      FM_INT(model, n_blocks, "number of transformer blocks"),
      FM_INT(model, head_dim, "attention head dimension (paper: 64); heads = d_model/head_dim"),
      FM_INT(model, seq_len, "context length in tokens (size of the position table)"),
      FM_INT(model, vocab_size, "vocabulary size (synthetic corpus uses it; shards' tokens must be below it)"),
      FM_ENUM(model, ffn, "FFN kind: moe | dense (dense = ordinary d_ff = 4d ReLU FFN)"),
      FM_DBL(model, init_scale, "truncated-normal init scale, divided by sqrt(fan_in) (paper: 0.1)"),
      FM_INT(moe, experts, "E, expansion rate: total FFN params / dense FFN params"),
      FM_INT(moe, granularity, "G: each expert split into G; E*G experts of width 4d/G"),
      FM_ENUM(moe, routing, "expert_choice | token_choice"),
      FM_INT(moe, group_size, "tokens per routing group (never crosses ranks); expert choice capacity c = floor(group/E)"),
      FM_DBL(moe, capacity_factor, "token choice: capacity per expert and group = ceil(cf * group_size * top_k / (E*G))"),
      FM_INT(moe, top_k, "token choice: experts per token (0 = G)"),
      FM_BOOL(moe, output_norm, "extra LayerNorm on the MoE output (crucial for G > 1)"),
      KeyDef{"moe.balance_loss",
             "Switch/GShard load-balancing loss coefficient a: adds a * E*G * sum_i f_i*P_i per routing group to "
             "the training objective (f_i: fraction of the group's top-k slots choosing expert i before capacity "
             "drops, i.e. Switch's top-1 fraction divided by k; P_i: mean router probability of expert i), which is "
             "exactly a when perfectly balanced. auto = 0.01 for token_choice, 0 for expert_choice (balanced by "
             "construction: a non-zero value is an error there). Logged apart from the cross-entropy",
             [](const Config& c) { return c.moe.balance_loss ? fmt_double(*c.moe.balance_loss) : std::string("auto"); },
             [](Config& c, const std::string& v) {
               if (v == "auto") c.moe.balance_loss.reset();
               else c.moe.balance_loss = to_double("moe.balance_loss", v);
             }},
      FM_DBL(moe, z_loss, "ST-MoE router z-loss coefficient: adds z_loss * mean over tokens of logsumexp(router "
                          "logits)^2 to the training objective (0 = off; either routing). Logged apart from the "
                          "cross-entropy"),
      FM_DBL(moe, bias_update_rate,
             "token choice: DeepSeek-V3 auxiliary-loss-free balancing. Each expert's bias is added to its router "
             "probability for the top-k selection only (combine weights stay unbiased) and after every step moves "
             "by rate * sign(mean load - load_i), loads counted over the whole global batch before capacity drops. "
             "Saved in checkpoints (0 = off; an error with expert_choice)"),
      FM_INT(train, steps, "optimizer steps"),
      FM_INT(train, batch_size, "sequences per global step (all ranks together)"),
      FM_DBL(train, lr, "peak learning rate"),
      FM_DBL(train, lr_min, "final learning rate of the cosine decay"),
      FM_DBL(train, warmup_frac, "fraction of steps of linear warmup (paper: 0.01)"),
      FM_DBL(train, weight_decay, "AdamW decoupled weight decay (matrices only)"),
      FM_DBL(train, beta1, "AdamW beta1"),
      FM_DBL(train, beta2, "AdamW beta2"),
      FM_DBL(train, eps, "AdamW epsilon"),
      FM_DBL(train, grad_clip, "clip gradients to this global L2 norm (0 = off)"),
      FM_UINT(train, seed, "seed of initialisation and batch order"),
      FM_ENUM(train, precision, "fp32 | bf16 | auto (bf16 only where the CPU has AMX or native bf16 measured faster)"),
      FM_ENUM(train, fp32_engine,
             "library of the fp32 GEMMs: openblas | onednn | auto (oneDNN only if a start-up micro-benchmark at the "
             "model's GEMM shapes, rank 0, one thread, measures it more than 5 % faster than OpenBLAS; openblas "
             "with bf16, where it does not matter). A resumed run keeps the engine and precision its checkpoint "
             "recorded unless these keys request others (then it is not bit-exact with an uninterrupted run)"),
      FM_INT(train, log_every, "steps between progress lines and metrics rows"),
      FM_INT(train, eval_every, "steps between validation evaluations (0 = only at the end)"),
      FM_INT(train, eval_tokens, "validation tokens per evaluation"),
      FM_INT(train, final_eval_tokens,
             "tokens of the fixed held-out set scored once at the end (same tokens for every run with the same "
             "data config and seq_len; stored as final_eval_* in metrics.h5 and fitted by moe-analyze; 0 = off). "
             "Default 2097152 (32768 sequences of 64): standard error 0.0039 nats on input/tiny.ini after 200 steps "
             "(per-token sd 1.96; measured by batch means over 64 blocks, tokens of a document being correlated)"),
      FM_INT(train, checkpoint_every, "steps between checkpoints (0 = only at the end and on signals)"),
      FM_INT(train, checkpoint_keep, "newest checkpoints kept"),
      FM_INT(train, threads, "OpenMP threads per rank (0 = OMP_NUM_THREADS / all cores)"),
      FM_ENUM(data, source, "synthetic | shards"),
      FM_STR(data, train_shards, "glob of llm.c token shards for training (data.source=shards)"),
      FM_STR(data, val_shards, "glob of llm.c token shards for validation"),
      FM_UINT(data, seed, "synthetic corpus seed"),
      FM_INT(data, synth_regimes, "synthetic: number of latent regimes (topics)"),
      FM_DBL(data, synth_regime_stay, "synthetic: probability of staying in the current regime per token"),
      FM_INT(data, synth_order, "synthetic: Markov order of each regime's rules"),
      FM_DBL(data, synth_zipf, "synthetic: Zipf exponent of token frequencies"),
      FM_DBL(data, synth_copy_prob, "synthetic: probability per token of starting a copy span"),
      FM_INT(data, synth_branching, "synthetic: successors per context in each regime"),
      FM_INT(data, synth_doc_len, "synthetic: tokens per independent document (regime and copies restart)"),
      FM_INT(data, synth_copy_distance, "synthetic: copy spans repeat text from 1..this many tokens back"),
      FM_DBL(data, synth_copy_len, "synthetic: mean copy span length in tokens (geometric, >= 1)"),
      FM_INT(parallel, expert_parallel, "EP: ranks sharing each layer's experts (divides world size and E*G)"),
      FM_STR(run, dir, "run directory: config.ini, metrics.h5, checkpoints/"),
      FM_ENUM(run, device,
             "where the kernels run: cpu | cuda | auto. No build has a CUDA backend yet (it is planned): auto "
             "runs cpu, and cuda is refused at start-up naming this key"),
      FM_STR(run, resume, "auto (resume from the checkpoint LATEST names, which must verify, else exit 3; when LATEST is missing or broken, from the newest step file that verifies) | never (start anew; existing checkpoints are kept) | PATH to a checkpoint"),
  };
  return keys;
}

const KeyDef* find_key(const std::string& key) {
  for (const auto& k : schema())
    if (k.key == key) return &k;
  return nullptr;
}

po::options_description schema_options() {
  po::options_description d("Configuration keys (INI [section] key = value, or --section.key value)");
  Config defaults;
  for (const auto& k : schema())
    // Vector-valued so that a key repeated on the command line is not an
    // error: the last occurrence wins (scripts append overrides).
    d.add_options()(k.key.c_str(), po::value<std::vector<std::string>>(),
                    (k.help + " [default: " + k.get(defaults) + "]").c_str());
  return d;
}

void apply_values(Config& c, const po::variables_map& vm) {
  for (const auto& k : schema())
    if (vm.count(k.key)) k.set(c, vm[k.key].as<std::vector<std::string>>().back());
}

// Upper bounds of the numeric keys (see Config::validate).
constexpr int64_t kMaxDModel = 65536;
constexpr int64_t kMaxBlocks = 1024;
constexpr int64_t kMaxSeqLen = 1 << 20;
constexpr int64_t kMaxExperts = 4096;         // moe.experts and moe.granularity each
constexpr int64_t kMaxSteps = 1000000000;
constexpr int64_t kMaxBatch = 1 << 20;
constexpr int64_t kMaxEvalTokens = int64_t(1) << 32;
constexpr int64_t kMaxThreads = 4096;
constexpr int64_t kMaxRegimes = 4096;
constexpr int64_t kMaxDocLen = int64_t(1) << 30;
constexpr double kMaxAuxCoefficient = 100.0;  // moe.balance_loss, moe.z_loss (typical: 1e-2, 1e-3)
constexpr double kMaxBiasUpdateRate = 1.0;    // the bias is in probability units
constexpr double kDefaultBalanceLoss = 0.01;  // Switch Transformer's alpha

void require(bool ok, const std::string& key, const std::string& what) {
  if (!ok) throw ConfigError("config key '" + key + "': " + what);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// boost's INI parser stores a key given twice as two values (the last would
// silently win); in a file that is almost always a mistake. Same reading of
// lines as boost: '#' starts a comment, "[section]" prefixes "section.".
void reject_duplicate_keys(const std::string& text, const std::string& origin) {
  std::map<std::string, int> first_line;
  std::istringstream is(text);
  std::string line, section;
  for (int n = 1; std::getline(is, line); ++n) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.erase(hash);
    line = trim(line);
    if (line.empty()) continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2)) + ".";
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;  // boost reports the syntax error
    const std::string key = section + trim(line.substr(0, eq));
    auto [it, fresh] = first_line.emplace(key, n);
    if (!fresh)
      throw ConfigError(origin + ":" + std::to_string(n) + ": duplicate config key '" + key + "' (first set at line " +
                        std::to_string(it->second) + ")");
  }
}

}  // namespace

void set_config_value(Config& c, const std::string& key, const std::string& value) {
  const KeyDef* k = find_key(key);
  if (!k) throw ConfigError("unknown config key '" + key + "'");
  k->set(c, value);
}

std::string config_help() {
  std::ostringstream os;
  os << schema_options();
  return os.str();
}

Config config_from_ini_text(const std::string& text, const std::string& origin) {
  Config c;
  reject_duplicate_keys(text, origin);
  std::istringstream is(text);
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(is, schema_options(), false), vm);
  } catch (const po::unknown_option& e) {
    throw ConfigError(origin + ": unknown config key '" + e.get_option_name() + "'");
  } catch (const po::error& e) {
    throw ConfigError(origin + ": " + e.what());
  }
  apply_values(c, vm);
  return c;
}

ParsedArgs parse_args(int argc, const char* const* argv, const std::string& usage,
                      const std::vector<AppOption>& app_options, bool allow_positional) {
  ParsedArgs out;
  po::options_description general("General options");
  general.add_options()("help,h", "show this help and exit")(
      "config", po::value<std::string>(), "INI config file (CLI keys override it)")(
      "print-config", "print the resolved config as INI and exit");
  po::options_description app("Program options");
  for (const auto& o : app_options) {
    std::string help = o.help;
    if (o.takes_value && !o.default_value.empty()) help += " [default: " + o.default_value + "]";
    if (o.takes_value)
      app.add_options()(o.name.c_str(), po::value<std::string>(), help.c_str());
    else
      app.add_options()(o.name.c_str(), help.c_str());
    if (o.takes_value) out.app[o.name] = o.default_value;
  }
  po::options_description keys = schema_options();
  po::options_description all;
  all.add(general);
  if (!app_options.empty()) all.add(app);
  all.add(keys);
  {
    std::ostringstream os;
    os << usage << "\n\n" << general;
    if (!app_options.empty()) os << "\n" << app;
    os << "\n" << keys;
    out.help_text = os.str();
  }
  po::positional_options_description pos;
  pos.add("positional__", -1);
  po::options_description hidden;
  hidden.add_options()("positional__", po::value<std::vector<std::string>>());
  po::options_description cli;
  cli.add(all).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(cli).positional(pos).run(), vm);
  } catch (const po::unknown_option& e) {
    throw ConfigError("unknown option or config key '" + e.get_option_name() + "' (see --help)");
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + e.what());
  }
  out.help = vm.count("help") > 0;
  out.print_config = vm.count("print-config") > 0;
  if (vm.count("positional__")) out.positional = vm["positional__"].as<std::vector<std::string>>();
  if (!allow_positional && !out.positional.empty())
    throw ConfigError("unexpected argument '" + out.positional.front() + "' (options are --key value; see --help)");
  if (out.help) return out;
  if (vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    // An ifstream opens a directory without complaint and reads nothing:
    // that would train with the defaults.
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      throw ConfigError("--config: '" + path + "' is a directory, not a config file");
    std::ifstream f(path);
    if (!f) throw ConfigError("--config: cannot open config file '" + path + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    if (f.bad()) throw ConfigError("--config: cannot read config file '" + path + "'");
    out.config = config_from_ini_text(ss.str(), path);
  }
  apply_values(out.config, vm);  // CLI beats file
  for (const auto& o : app_options) {
    if (!vm.count(o.name)) continue;
    out.app[o.name] = o.takes_value ? vm[o.name].as<std::string>() : "1";
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> Config::to_pairs() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& k : schema()) out.emplace_back(k.key, k.get(*this));
  return out;
}

std::string Config::to_ini() const {
  std::ostringstream os;
  std::string section;
  for (const auto& k : schema()) {
    auto dot = k.key.find('.');
    std::string sec = k.key.substr(0, dot);
    if (sec != section) {
      if (!section.empty()) os << "\n";
      os << "[" << sec << "]\n";
      section = sec;
    }
    os << k.key.substr(dot + 1) << " = " << k.get(*this) << "\n";
  }
  return os.str();
}

const std::vector<std::string>& Config::shape_keys() {
  static const std::vector<std::string> keys = {
      "model.d_model", "model.n_blocks", "model.head_dim", "model.seq_len", "model.vocab_size",
      "model.ffn", "moe.experts", "moe.granularity", "moe.routing", "moe.group_size",
      "moe.capacity_factor", "moe.top_k", "moe.output_norm"};
  return keys;
}

std::string Config::shape_keys_hash() const {
  // FNV-1a over "key=value\n" of the shape keys: stable across platforms.
  uint64_t h = 1469598103934665603ull;
  for (const auto& key : shape_keys()) {
    std::string line = key + "=" + find_key(key)->get(*this) + "\n";
    for (unsigned char ch : line) {
      h ^= ch;
      h *= 1099511628211ull;
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

std::string config_name(Ffn v) { return enum_name(v); }
std::string config_name(Routing v) { return enum_name(v); }
std::string config_name(PrecisionChoice v) { return enum_name(v); }
std::string config_name(Fp32EngineChoice v) { return enum_name(v); }
std::string config_name(DataSource v) { return enum_name(v); }
std::string config_name(DeviceChoice v) { return enum_name(v); }

Routing parse_routing(const std::string& s) { return parse_enum("moe.routing", s, Routing::expert_choice); }

double Config::balance_loss_coef() const {
  if (dense()) return 0.0;
  if (moe.balance_loss) return *moe.balance_loss;
  return moe.routing == Routing::token_choice ? kDefaultBalanceLoss : 0.0;
}

int64_t Config::expert_capacity() const {
  int64_t c = moe.group_size / moe.experts;  // = G*group/(E*G)
  return c < 1 ? 1 : c;
}

int64_t Config::warmup_steps() const { return int64_t(std::llround(train.warmup_frac * double(train.steps))); }

ModelShape Config::shape() const {
  ModelShape s;
  s.d_model = model.d_model;
  s.n_blocks = model.n_blocks;
  s.vocab_size = model.vocab_size;
  s.seq_len = model.seq_len;
  s.expansion = dense() ? 1 : moe.experts;
  s.granularity = dense() ? 1 : moe.granularity;
  s.dense = dense();
  s.moe_output_norm = moe.output_norm;
  return s;
}

void Config::validate(int world_size) const {
  require(model.d_model > 0, "model.d_model", "must be positive, got " + std::to_string(model.d_model));
  // Upper bounds: far beyond any model this trainer can run, low enough that
  // no product of them overflows and nothing spins silently for minutes (the
  // memory check at start-up then judges what this machine can hold).
  require(model.d_model <= kMaxDModel, "model.d_model", "must be at most " + std::to_string(kMaxDModel) + ", got " + std::to_string(model.d_model));
  require(model.head_dim > 0, "model.head_dim", "must be positive, got " + std::to_string(model.head_dim));
  require(model.d_model % model.head_dim == 0, "model.d_model",
          std::to_string(model.d_model) + " is not divisible by model.head_dim = " + std::to_string(model.head_dim));
  require(model.n_blocks > 0 && model.n_blocks <= kMaxBlocks, "model.n_blocks",
          "must be in [1, " + std::to_string(kMaxBlocks) + "], got " + std::to_string(model.n_blocks));
  require(model.seq_len > 1 && model.seq_len <= kMaxSeqLen, "model.seq_len",
          "must be in [2, " + std::to_string(kMaxSeqLen) + "], got " + std::to_string(model.seq_len));
  require(model.vocab_size > 1 && model.vocab_size <= 65536, "model.vocab_size",
          "must be in [2, 65536] (uint16 token shards), got " + std::to_string(model.vocab_size));
  require(model.init_scale > 0, "model.init_scale", "must be positive");
  if (!dense()) {
    require(moe.experts > 0 && moe.experts <= kMaxExperts, "moe.experts",
            "must be in [1, " + std::to_string(kMaxExperts) + "], got " + std::to_string(moe.experts));
    require(moe.granularity > 0 && moe.granularity <= kMaxExperts, "moe.granularity",
            "must be in [1, " + std::to_string(kMaxExperts) + "], got " + std::to_string(moe.granularity));
    require(d_ff() % moe.granularity == 0, "moe.granularity",
            "d_ff = 4*d_model = " + std::to_string(d_ff()) + " is not divisible by G = " + std::to_string(moe.granularity));
    require(moe.group_size > 0, "moe.group_size", "must be positive");
    // At E*G/top_k every expert can already take its whole group; more
    // changes nothing (and 1e18 would overflow the capacity).
    require(moe.capacity_factor > 0 && moe.capacity_factor <= double(n_experts()), "moe.capacity_factor",
            "must be in (0, E*G = " + std::to_string(n_experts()) + "] (E*G/top_k already serves every token), got " +
                fmt_double(moe.capacity_factor));
    require(moe.top_k >= 0 && top_k() <= n_experts(), "moe.top_k",
            "must be in [0, E*G = " + std::to_string(n_experts()) + "]");
    const bool expert_choice = routing() == Routing::expert_choice;
    if (moe.balance_loss) {
      const double b = *moe.balance_loss;
      require(std::isfinite(b) && b >= 0 && b <= kMaxAuxCoefficient, "moe.balance_loss",
              "must be auto or a number in [0, " + fmt_double(kMaxAuxCoefficient) + "], got " + fmt_double(b));
      require(!expert_choice || b == 0, "moe.balance_loss",
              "is " + fmt_double(b) + " but moe.routing is expert_choice, which is balanced by construction (every "
              "expert takes the same number of tokens per group): set it to 0 or auto, or use token_choice");
    }
    require(std::isfinite(moe.z_loss) && moe.z_loss >= 0 && moe.z_loss <= kMaxAuxCoefficient, "moe.z_loss",
            "must be in [0, " + fmt_double(kMaxAuxCoefficient) + "], got " + fmt_double(moe.z_loss));
    require(std::isfinite(moe.bias_update_rate) && moe.bias_update_rate >= 0 &&
                moe.bias_update_rate <= kMaxBiasUpdateRate,
            "moe.bias_update_rate",
            "must be in [0, " + fmt_double(kMaxBiasUpdateRate) + "], got " + fmt_double(moe.bias_update_rate));
    require(!expert_choice || moe.bias_update_rate == 0, "moe.bias_update_rate",
            "is " + fmt_double(moe.bias_update_rate) + " but moe.routing is expert_choice, which is balanced by "
            "construction and has no selection bias: set it to 0 or use token_choice");
  }
  require(train.steps > 0 && train.steps <= kMaxSteps, "train.steps",
          "must be in [1, " + std::to_string(kMaxSteps) + "], got " + std::to_string(train.steps));
  require(train.batch_size > 0 && train.batch_size <= kMaxBatch, "train.batch_size",
          "must be in [1, " + std::to_string(kMaxBatch) + "], got " + std::to_string(train.batch_size));
  require(train.batch_size % std::max(world_size, 1) == 0, "train.batch_size",
          std::to_string(train.batch_size) + " sequences do not split evenly over " + std::to_string(world_size) + " ranks");
  require(train.lr > 0, "train.lr", "must be positive");
  require(train.lr_min >= 0 && train.lr_min <= train.lr, "train.lr_min", "must be in [0, train.lr]");
  require(train.warmup_frac >= 0 && train.warmup_frac < 1, "train.warmup_frac", "must be in [0, 1)");
  require(train.weight_decay >= 0, "train.weight_decay", "must be non-negative");
  require(train.beta1 >= 0 && train.beta1 < 1, "train.beta1", "must be in [0, 1)");
  require(train.beta2 >= 0 && train.beta2 < 1, "train.beta2", "must be in [0, 1)");
  require(train.eps > 0 && train.eps <= 1, "train.eps", "must be in (0, 1]");
  require(train.grad_clip >= 0, "train.grad_clip", "must be non-negative");
  require(train.log_every > 0, "train.log_every", "must be positive");
  require(train.eval_every >= 0, "train.eval_every", "must be non-negative");
  require(train.eval_tokens > 0 && train.eval_tokens <= kMaxEvalTokens, "train.eval_tokens",
          "must be in [1, " + std::to_string(kMaxEvalTokens) + "], got " + std::to_string(train.eval_tokens));
  require(train.final_eval_tokens >= 0 && train.final_eval_tokens <= kMaxEvalTokens, "train.final_eval_tokens",
          "must be in [0, " + std::to_string(kMaxEvalTokens) + "] (0 = no final evaluation), got " +
              std::to_string(train.final_eval_tokens));
  require(train.checkpoint_every >= 0, "train.checkpoint_every", "must be non-negative");
  require(train.checkpoint_keep >= 1, "train.checkpoint_keep", "must be at least 1");
  require(train.threads >= 0 && train.threads <= kMaxThreads, "train.threads",
          "must be in [0, " + std::to_string(kMaxThreads) + "], got " + std::to_string(train.threads));
  if (data.source == DataSource::shards) require(!data.train_shards.empty(), "data.train_shards", "is required when data.source=shards");
  require(data.synth_regimes > 0 && data.synth_regimes <= kMaxRegimes, "data.synth_regimes",
          "must be in [1, " + std::to_string(kMaxRegimes) + "], got " + std::to_string(data.synth_regimes));
  require(data.synth_regime_stay >= 0 && data.synth_regime_stay <= 1, "data.synth_regime_stay", "must be in [0, 1]");
  require(data.synth_order >= 1 && data.synth_order <= 4, "data.synth_order", "must be in [1, 4]");
  require(data.synth_zipf >= 0, "data.synth_zipf", "must be non-negative");
  require(data.synth_copy_prob >= 0 && data.synth_copy_prob < 1, "data.synth_copy_prob", "must be in [0, 1)");
  require(data.synth_branching >= 1 && data.synth_branching <= model.vocab_size, "data.synth_branching",
          "must be in [1, model.vocab_size]");
  require(data.synth_doc_len >= 1 && data.synth_doc_len <= kMaxDocLen, "data.synth_doc_len",
          "must be in [1, " + std::to_string(kMaxDocLen) + "], got " + std::to_string(data.synth_doc_len));
  require(data.synth_copy_distance >= 1 && data.synth_copy_distance <= 4096, "data.synth_copy_distance", "must be in [1, 4096]");
  require(data.synth_copy_len >= 1 && data.synth_copy_len <= double(kMaxDocLen), "data.synth_copy_len",
          "must be in [1, " + std::to_string(kMaxDocLen) + "]");
  if (data.source == DataSource::shards) require(!data.val_shards.empty(), "data.val_shards", "is required when data.source=shards (moe-data prepare writes val_*.bin)");
  require(parallel.expert_parallel >= 1, "parallel.expert_parallel", "must be at least 1");
  require(world_size % parallel.expert_parallel == 0, "parallel.expert_parallel",
          std::to_string(parallel.expert_parallel) + " does not divide the number of ranks " + std::to_string(world_size));
  require(n_experts() % parallel.expert_parallel == 0, "parallel.expert_parallel",
          std::to_string(parallel.expert_parallel) + " does not divide the number of experts E*G = " + std::to_string(n_experts()));
  if (!dense()) {  // after the batch checks it depends on
    if (routing() == Routing::expert_choice)
      require(moe.group_size >= moe.experts, "moe.group_size",
              "must be at least moe.experts (capacity group/E would be 0)");
    // Capacity floor(group/E) per expert gives E*G*floor(group/E) slots per
    // group: G per token only when E divides the group, and the FLOP count
    // (counting.hpp) assumes G.
    if (routing() == Routing::expert_choice)
      require(moe.group_size % moe.experts == 0, "moe.group_size",
              std::to_string(moe.group_size) + " is not a multiple of moe.experts = " + std::to_string(moe.experts) +
                  ": expert choice would give tokens " +
                  fmt_double(double(moe.granularity * moe.experts * (moe.group_size / moe.experts)) /
                             double(moe.group_size)) +
                  " expert slots on average instead of G = " + std::to_string(moe.granularity) +
                  ", while the FLOP count assumes G");
    int64_t local_tokens = (train.batch_size / std::max(world_size, 1)) * model.seq_len;
    require(local_tokens % moe.group_size == 0, "moe.group_size",
            "tokens per rank (batch_size/ranks * seq_len = " + std::to_string(local_tokens) +
                ") must be a multiple of the routing group size " + std::to_string(moe.group_size) +
                " so that groups never cross ranks");
  }
  require(!run.dir.empty(), "run.dir", "must not be empty");
  require(!run.resume.empty(), "run.resume", "must be auto, never or a checkpoint path");
}

}  // namespace finemoe
