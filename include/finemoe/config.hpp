// The configuration schema: the ONE place every key, its default, its meaning
// and its valid range live. --help, --print-config, config.ini in the run
// directory and the metrics.h5 attributes are all generated from it.
//
// Sources, later beats earlier: defaults < INI file (--config) < CLI
// (--section.key value). Unknown keys, wrong types and out-of-range values are
// ConfigErrors whose message names the key.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "finemoe/counting.hpp"

namespace finemoe {

// Keys whose value is one of a fixed set of names are enums: parsed once, by
// set_config_value (any other name is a ConfigError naming the key), and
// written back by the same table (to_pairs, config.ini, the metrics.h5
// attributes, --help). Code compares enum values, never strings.
enum class Ffn { moe, dense };                               // model.ffn
enum class Routing { expert_choice, token_choice };          // moe.routing: how a MoE layer assigns tokens (moe.hpp)
enum class PrecisionChoice { fp32, bf16, automatic };        // train.precision (backend.hpp resolves automatic)
enum class Fp32EngineChoice { automatic, openblas, onednn };  // train.fp32_engine (backend.hpp resolves automatic)
enum class DataSource { synthetic, shards };                 // data.source
enum class DeviceChoice { cpu, cuda, automatic };            // run.device (device.hpp backend_for)

// The name a value has in configs ("auto" for automatic).
std::string config_name(Ffn v);
std::string config_name(Routing v);
std::string config_name(PrecisionChoice v);
std::string config_name(Fp32EngineChoice v);
std::string config_name(DataSource v);
std::string config_name(DeviceChoice v);

// "expert_choice" | "token_choice"; ConfigError naming moe.routing otherwise.
Routing parse_routing(const std::string& name);

struct ModelConfig {
  int64_t d_model = 128;
  int64_t n_blocks = 2;
  int64_t head_dim = 64;
  int64_t seq_len = 64;
  int64_t vocab_size = 512;
  Ffn ffn = Ffn::moe;
  double init_scale = 0.1;
};

struct MoEConfig {
  int64_t experts = 8;            // E, expansion rate
  int64_t granularity = 1;        // G
  Routing routing = Routing::expert_choice;
  int64_t group_size = 256;       // tokens per expert-choice group
  double capacity_factor = 1.0;   // token choice
  int64_t top_k = 0;              // token choice; 0 means G
  bool output_norm = true;        // extra LayerNorm on the MoE output
  // Load balancing (moe.hpp, "Auxiliary losses"); none of them is a shape key.
  std::optional<double> balance_loss;  // Switch/GShard coefficient; unset ("auto"): 0.01 for token choice, 0 for expert choice
  double z_loss = 0;              // ST-MoE router z-loss coefficient (0 = off)
  double bias_update_rate = 0;    // DeepSeek-V3 selection-bias step per optimizer step (token choice; 0 = off)
};

struct TrainConfig {
  int64_t steps = 200;
  int64_t batch_size = 16;        // sequences per global step (all ranks together)
  double lr = 1e-3;
  double lr_min = 1e-4;           // cosine floor
  double warmup_frac = 0.01;      // fraction of steps of linear warmup
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;         // global-norm clip; 0 disables
  uint64_t seed = 1234;
  PrecisionChoice precision = PrecisionChoice::fp32;
  Fp32EngineChoice fp32_engine = Fp32EngineChoice::automatic;  // fp32 GEMM library (backend.hpp)
  int64_t log_every = 10;
  int64_t eval_every = 0;         // 0: evaluate only at the end
  int64_t eval_tokens = 16384;
  int64_t final_eval_tokens = 2097152;  // fixed held-out set scored at the end (0 = off); see final_eval.hpp
  int64_t checkpoint_every = 0;   // 0: checkpoint only at the end / on signal
  int64_t checkpoint_keep = 2;
  int64_t threads = 0;            // OpenMP threads per rank; 0 = runtime default
};

struct DataConfig {
  DataSource source = DataSource::synthetic;
  std::string train_shards = "";     // glob of llm.c .bin shards (source=shards)
  std::string val_shards = "";
  uint64_t seed = 42;                // synthetic corpus seed
  int64_t synth_regimes = 8;         // latent topic/regime states
  double synth_regime_stay = 0.995;  // P(stay in regime) per token
  int64_t synth_order = 2;           // Markov order of per-regime rules
  double synth_zipf = 1.1;           // Zipf exponent of the vocabulary
  double synth_copy_prob = 0.05;     // probability of starting a copy span
  int64_t synth_branching = 8;       // successors per context (sparsity of rules)
  int64_t synth_doc_len = 1024;      // tokens per independent synthetic document
  int64_t synth_copy_distance = 32;  // copy spans repeat text from 1..this many tokens back
  double synth_copy_len = 8.0;       // mean copy span length (geometric)
};

struct ParallelConfig {
  int64_t expert_parallel = 1;       // EP ranks sharing a layer's experts
};

struct RunConfig {
  std::string dir = "runs/default";  // run directory (metrics.h5, checkpoints/)
  std::string resume = "auto";       // auto | never | PATH to a checkpoint
  DeviceChoice device = DeviceChoice::automatic;  // the rank's Backend (device.hpp backend_for)
};

struct Config {
  ModelConfig model;
  MoEConfig moe;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  RunConfig run;

  // Derived quantities.
  bool dense() const { return model.ffn == Ffn::dense; }
  Routing routing() const { return moe.routing; }
  int64_t n_heads() const { return model.d_model / model.head_dim; }
  int64_t n_experts() const { return ffn_experts(dense(), moe.experts, moe.granularity); }
  int64_t d_ff() const { return ffn_hidden(model.d_model); }
  int64_t d_expert() const { return ffn_expert_width(dense(), model.d_model, moe.granularity); }
  int64_t top_k() const { return moe.top_k > 0 ? moe.top_k : moe.granularity; }
  // The balance-loss coefficient in force: moe.balance_loss, or for "auto"
  // 0.01 with token choice and 0 with expert choice (balanced by
  // construction); 0 for a dense model.
  double balance_loss_coef() const;
  // Expert-choice capacity per group, c = G·group/(E·G) = group/E, rounded down
  // (documented in --help); at least 1.
  int64_t expert_capacity() const;
  int64_t warmup_steps() const;
  ModelShape shape() const;

  // Checks every value and cross-key constraint; throws ConfigError naming
  // the key. `world_size` adds the constraints of the process grid.
  void validate(int world_size = 1) const;

  // Every key as "section.key" -> value text, in schema order.
  std::vector<std::pair<std::string, std::string>> to_pairs() const;
  // INI text with every key (config.ini in the run directory).
  std::string to_ini() const;
  // Hash of the keys that define the model's shape (checkpoint compatibility).
  std::string shape_keys_hash() const;
  // Keys that must match between a checkpoint and a resumed run.
  static const std::vector<std::string>& shape_keys();
};

// An executable's own option (not part of the model/run schema), e.g.
// moe-bench's --steps. Flags (takes_value=false) read "1" when given.
struct AppOption {
  std::string name;
  std::string help;
  std::string default_value;
  bool takes_value = true;
};

// Result of parsing a command line.
struct ParsedArgs {
  Config config;
  bool help = false;
  bool print_config = false;
  std::string help_text;                     // full --help text for this program
  std::map<std::string, std::string> app;    // AppOption values by name
  std::vector<std::string> positional;       // non-option arguments
};

// Parses `--config FILE` + `--section.key value` overrides (CLI beats file) and
// the program's own options. Does not validate (call Config::validate()).
ParsedArgs parse_args(int argc, const char* const* argv, const std::string& usage,
                      const std::vector<AppOption>& app_options = {},
                      bool allow_positional = false);
// Full --help text for the schema.
std::string config_help();
// Parses INI text (for tests and checkpoint headers).
Config config_from_ini_text(const std::string& text, const std::string& origin);
// Applies "section.key" = value (same validation of types as files).
void set_config_value(Config& c, const std::string& key, const std::string& value);

}  // namespace finemoe
