#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/memory_check.hpp"

using namespace finemoe;

namespace {
std::string write_tmp(const std::string& text) {
  char name[] = "/tmp/finemoe_cfg_XXXXXX";
  int fd = mkstemp(name);
  close(fd);
  std::ofstream(name) << text;
  return name;
}
ParsedArgs parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"prog"};
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_args(int(argv.size()), argv.data(), "usage");
}
// Expects validate() to throw a ConfigError whose message names `key`.
void expect_invalid(Config c, const std::string& key, int world = 1) {
  try {
    c.validate(world);
    FAIL() << "expected ConfigError naming " << key;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << e.what();
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
}
}  // namespace

TEST(Config, DefaultsAreValid) { EXPECT_NO_THROW(Config().validate(1)); }

TEST(Config, FileThenCliOverrides) {
  std::string f = write_tmp("[model]\nd_model = 256\nn_blocks = 3\n[moe]\ngranularity = 4\n");
  ParsedArgs a = parse({"--config", f, "--model.d_model", "128", "--train.lr", "3e-4"});
  EXPECT_EQ(a.config.model.d_model, 128);  // CLI beats file
  EXPECT_EQ(a.config.model.n_blocks, 3);
  EXPECT_EQ(a.config.moe.granularity, 4);
  EXPECT_DOUBLE_EQ(a.config.train.lr, 3e-4);
  std::remove(f.c_str());
}

TEST(Config, RepeatedCliKeyLastWins) {
  ParsedArgs a = parse({"--train.lr", "1e-3", "--train.lr", "2e-3"});
  EXPECT_DOUBLE_EQ(a.config.train.lr, 2e-3);
}

TEST(Config, UnknownKeyInFileNamed) {
  std::string f = write_tmp("[model]\nd_modle = 256\n");
  try {
    parse({"--config", f});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.d_modle"), std::string::npos) << e.what();
  }
  std::remove(f.c_str());
}

TEST(Config, UnknownCliKeyAndBadTypesNamed) {
  try {
    parse({"--moe.granularty", "4"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("moe.granularty"), std::string::npos) << e.what();
  }
  try {
    parse({"--model.d_model", "12x"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.d_model'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("12x"), std::string::npos) << e.what();
  }
  try {
    parse({"--moe.output_norm", "maybe"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'moe.output_norm'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse({"--config", "/nonexistent/x.ini"}), ConfigError);
}

TEST(Config, ImpossibleShapesNamed) {
  Config c;
  c.model.d_model = 100;  // not divisible by head_dim 64
  expect_invalid(c, "model.d_model");
  c = Config();
  c.model.d_model = 0;
  expect_invalid(c, "model.d_model");
  c = Config();
  c.model.n_blocks = -1;
  expect_invalid(c, "model.n_blocks");
  c = Config();
  c.moe.granularity = 3;  // d_ff 512 not divisible by 3
  expect_invalid(c, "moe.granularity");
  c = Config();
  c.train.batch_size = 6;  // not divisible over 4 ranks
  c.moe.routing = Routing::token_choice;
  expect_invalid(c, "train.batch_size", 4);
  c = Config();
  c.parallel.expert_parallel = 3;
  c.train.batch_size = 12;
  expect_invalid(c, "parallel.expert_parallel", 3);  // 3 does not divide 8 experts
  c = Config();
  c.train.batch_size = 2;  // 2·64 = 128 tokens < group 256
  expect_invalid(c, "moe.group_size");
  c = Config();
  c.model.vocab_size = 70000;
  expect_invalid(c, "model.vocab_size");
}

// Expert choice gives each of the E*G experts floor(group/E) tokens: with E not
// dividing the group, tokens get fewer than G expert slots on average while
// the FLOP count assumes G. Token choice has no such rule.
TEST(Config, ExpertChoiceGroupNotDivisibleByExpertsIsAnError) {
  Config c;
  c.moe.experts = 6;  // 256 = 6*42 + 4: 6*2*42/256 = 1.96875 slots per token at G = 2
  c.moe.granularity = 2;
  c.moe.group_size = 256;
  try {
    c.validate(1);
    FAIL() << "group 256 with E = 6 accepted";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'moe.group_size'"), std::string::npos) << m;
    EXPECT_NE(m.find("not a multiple of moe.experts = 6"), std::string::npos) << m;
    EXPECT_NE(m.find("1.96875 expert slots"), std::string::npos) << m;
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
  c.moe.routing = Routing::token_choice;
  EXPECT_NO_THROW(c.validate(1));
  c.moe.routing = Routing::expert_choice;
  c.moe.experts = 8;
  EXPECT_NO_THROW(c.validate(1));
}

TEST(Config, IniRoundTripAndShapeHash) {
  Config c;
  c.model.d_model = 192;
  c.moe.granularity = 8;
  c.train.lr = 1.25e-4;
  c.run.dir = "runs/x y";
  Config back = config_from_ini_text(c.to_ini(), "roundtrip");
  EXPECT_EQ(back.to_ini(), c.to_ini());
  EXPECT_EQ(back.shape_keys_hash(), c.shape_keys_hash());
  back.train.steps = 999;  // training-only keys do not change the hash
  EXPECT_EQ(back.shape_keys_hash(), c.shape_keys_hash());
  back.moe.granularity = 4;
  EXPECT_NE(back.shape_keys_hash(), c.shape_keys_hash());
}

TEST(Config, DerivedValues) {
  Config c;
  c.moe.experts = 8;
  c.moe.granularity = 4;
  c.moe.group_size = 256;
  EXPECT_EQ(c.n_experts(), 32);
  EXPECT_EQ(c.d_expert(), 128);
  EXPECT_EQ(c.expert_capacity(), 32);  // G·group/(E·G) = 4·256/32
  EXPECT_EQ(c.top_k(), 4);
  c.train.steps = 1000;
  c.train.warmup_frac = 0.01;
  EXPECT_EQ(c.warmup_steps(), 10);
}

// ---- input limits (issue 19) --------------------------------------------------
// Expects `fn` to throw a ConfigError (exit 2) whose message holds every text.
template <typename F>
void expect_config_error(F&& fn, std::vector<std::string> texts) {
  try {
    fn();
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.exit_code(), kExitUsage);
    for (const auto& t : texts) EXPECT_NE(std::string(e.what()).find(t), std::string::npos) << t << " in: " << e.what();
  }
}

TEST(Config, DuplicateIniKeyNamesKeyAndBothLines) {
  const std::string text = "[model]\nd_model = 64\n# comment\n\n[train]\nsteps = 2\n[model]\n  d_model=128  # again\n";
  expect_config_error([&] { config_from_ini_text(text, "dup.ini"); },
                      {"dup.ini:8", "duplicate config key 'model.d_model'", "first set at line 2"});
  const std::string f = write_tmp(text);
  expect_config_error([&] { parse({"--config", f}); }, {f + ":8", "'model.d_model'", "line 2"});
  std::remove(f.c_str());
  // The same key name in two sections is not a duplicate; a repeated CLI key still is allowed.
  EXPECT_NO_THROW(config_from_ini_text("[model]\nseq_len = 32\n[data]\nseed = 3\n[train]\nseed = 4\n", "ok.ini"));
  EXPECT_EQ(config_from_ini_text("[data]\nseed = 3\n[train]\nseed = 4\n", "ok.ini").train.seed, 4u);
}

TEST(Config, ConfigNamingADirectoryIsRefused) {
  expect_config_error([] { parse({"--config", "/tmp"}); }, {"'/tmp'", "is a directory"});
}

TEST(Config, NumericKeysHaveUpperBounds) {
  struct Case {
    std::string key, value;
  } cases[] = {
      {"model.d_model", "131072"},     {"model.n_blocks", "100000000"}, {"model.seq_len", "2000000"},
      {"moe.experts", "100000"},       {"moe.granularity", "8192"},     {"train.steps", "2000000000"},
      {"train.batch_size", "4194304"}, {"train.eval_tokens", "9000000000"}, {"train.threads", "100000"},
      {"train.eps", "2"},              {"data.synth_regimes", "100000"}, {"data.synth_doc_len", "4000000000"},
  };
  for (const auto& c : cases) {
    Config cfg;
    set_config_value(cfg, c.key, c.value);
    expect_invalid(cfg, c.key);
  }
  // capacity_factor: up to E*G (= 8 by default) is accepted, 1e18 is not.
  Config ok;
  ok.moe.routing = Routing::token_choice;
  ok.moe.capacity_factor = 8;
  EXPECT_NO_THROW(ok.validate(1));
  ok.moe.capacity_factor = 1e18;
  expect_invalid(ok, "moe.capacity_factor");
  // The bounds themselves are accepted.
  Config edge;
  edge.model.n_blocks = 1024;
  EXPECT_NO_THROW(edge.validate(1));
}

TEST(Config, MemoryCheckNamesKeysAndBytes) {
  Config c;  // d 128, 2 blocks, E 8: a few MiB
  EXPECT_NO_THROW(check_memory_fits(c, 1, 1, uint64_t(1) << 30));
  EXPECT_NO_THROW(check_memory_fits(c, 1, 1, 0));  // unknown: not checked
  const double need = train_memory_bytes(c.shape(), c.n_heads(), double(c.train.batch_size * c.model.seq_len)).total();
  const uint64_t avail = uint64_t(need) - 1;
  expect_config_error([&] { check_memory_fits(c, 1, 1, avail); },
                      {"'model.d_model' = 128", "'model.n_blocks' = 2", "'moe.experts' = 8", "'train.batch_size' = 16",
                       std::to_string(avail) + " bytes", "available"});
  // Two ranks on this node need twice the per-rank estimate.
  EXPECT_NO_THROW(check_memory_fits(c, 1, 1, uint64_t(need) + 1));
  expect_config_error([&] { check_memory_fits(c, 1, 2, uint64_t(need) + 1); }, {"x 2 ranks on this node"});
  EXPECT_GT(available_memory_bytes(), 0u);
}

// ---- load balancing: moe.balance_loss, moe.z_loss, moe.bias_update_rate -----

TEST(Config, LoadBalancingDefaultsAndAuto) {
  Config c;  // expert choice
  EXPECT_FALSE(c.moe.balance_loss.has_value());
  EXPECT_EQ(c.balance_loss_coef(), 0.0) << "auto: expert choice is balanced by construction";
  c.moe.routing = Routing::token_choice;
  EXPECT_EQ(c.balance_loss_coef(), 0.01) << "auto: Switch's 0.01 for token choice";
  EXPECT_EQ(c.moe.z_loss, 0.0);
  EXPECT_EQ(c.moe.bias_update_rate, 0.0);
  EXPECT_NO_THROW(c.validate(1));
  c.model.ffn = Ffn::dense;
  EXPECT_EQ(c.balance_loss_coef(), 0.0);

  // "auto" and numbers round-trip through INI text and the CLI.
  ParsedArgs a = parse({"--moe.routing", "token_choice", "--moe.balance_loss", "0.05", "--moe.z_loss", "1e-3",
                        "--moe.bias_update_rate", "0.001"});
  ASSERT_TRUE(a.config.moe.balance_loss.has_value());
  EXPECT_EQ(a.config.balance_loss_coef(), 0.05);
  EXPECT_EQ(a.config.moe.z_loss, 1e-3);
  EXPECT_EQ(a.config.moe.bias_update_rate, 0.001);
  EXPECT_NO_THROW(a.config.validate(1));
  Config back = config_from_ini_text(a.config.to_ini(), "rt.ini");
  EXPECT_EQ(back.to_ini(), a.config.to_ini());
  EXPECT_EQ(back.balance_loss_coef(), 0.05);
  EXPECT_NE(Config().to_ini().find("balance_loss = auto"), std::string::npos) << Config().to_ini();
  EXPECT_FALSE(parse({"--moe.balance_loss", "0.05", "--moe.balance_loss", "auto"}).config.moe.balance_loss);
  // An explicit 0 with expert choice is fine (it says "off").
  Config ec;
  ec.moe.balance_loss = 0.0;
  EXPECT_NO_THROW(ec.validate(1));
  // None of them is a shape key: they may change on resume.
  Config other = ec;
  other.moe.z_loss = 0.5;
  EXPECT_EQ(other.shape_keys_hash(), ec.shape_keys_hash());
}

TEST(Config, LoadBalancingBadValuesNameTheKey) {
  // Negative, beyond the bound: validate() names key and value.
  struct Case {
    std::string key, value, routing, text;
  } cases[] = {
      {"moe.balance_loss", "-0.01", "token_choice", "-0.01"},
      {"moe.balance_loss", "1000", "token_choice", "1000"},
      {"moe.z_loss", "-1e-3", "token_choice", "-0.001"},
      {"moe.z_loss", "-1e-3", "expert_choice", "-0.001"},
      {"moe.z_loss", "101", "expert_choice", "101"},
      {"moe.bias_update_rate", "-0.001", "token_choice", "-0.001"},
      {"moe.bias_update_rate", "2", "token_choice", "2"},
  };
  for (const auto& c : cases) {
    Config cfg;
    cfg.moe.routing = parse_routing(c.routing);
    set_config_value(cfg, c.key, c.value);
    expect_config_error([&] { cfg.validate(1); }, {"'" + c.key + "'", c.text});
  }
  // NaN and infinity are refused when read, naming the key and the text.
  for (const std::string key : {"moe.balance_loss", "moe.z_loss", "moe.bias_update_rate"})
    for (const std::string v : {"nan", "NaN", "inf", "-inf", "0.01x", ""}) {
      expect_config_error([&] { parse({"--" + key, v}); }, {"'" + key + "'", "expected a number", "'" + v + "'"});
      expect_config_error([&] { config_from_ini_text("[moe]\n" + key.substr(4) + " = " + v + "\n", "f.ini"); },
                          {"'" + key + "'"});
    }
  // Set programmatically, NaN is caught by validate().
  Config nan_cfg;
  nan_cfg.moe.routing = Routing::token_choice;
  nan_cfg.moe.balance_loss = std::nan("");
  expect_invalid(nan_cfg, "moe.balance_loss");
  nan_cfg = Config();
  nan_cfg.moe.z_loss = std::nan("");
  expect_invalid(nan_cfg, "moe.z_loss");
  nan_cfg = Config();
  nan_cfg.moe.routing = Routing::token_choice;
  nan_cfg.moe.bias_update_rate = std::nan("");
  expect_invalid(nan_cfg, "moe.bias_update_rate");
}

// Expert choice is balanced by construction: a non-zero balance loss or
// selection-bias rate there is a config error saying so (never silently
// ignored); the z-loss applies to either routing.
TEST(Config, LoadBalancingWithExpertChoiceIsRejected) {
  Config c;
  c.moe.balance_loss = 0.01;
  expect_config_error([&] { c.validate(1); }, {"'moe.balance_loss'", "expert_choice", "balanced by construction"});
  expect_config_error([] { parse({"--moe.balance_loss", "0.02"}).config.validate(1); },
                      {"'moe.balance_loss'", "0.02", "expert_choice"});
  Config r;
  r.moe.bias_update_rate = 1e-3;
  expect_config_error([&] { r.validate(1); }, {"'moe.bias_update_rate'", "expert_choice"});
  Config z;
  z.moe.z_loss = 1e-3;
  EXPECT_NO_THROW(z.validate(1));
  // The same values are fine with token choice.
  c.moe.routing = r.moe.routing = Routing::token_choice;
  EXPECT_NO_THROW(c.validate(1));
  EXPECT_NO_THROW(r.validate(1));
}

TEST(Config, HelpListsLoadBalancingKeys) {
  // Whitespace collapsed: the help text is wrapped to the terminal width.
  std::string help;
  for (char ch : config_help()) {
    const bool space = ch == ' ' || ch == '\n';
    if (!space || (!help.empty() && help.back() != ' ')) help += space ? ' ' : ch;
  }
  for (const char* k : {"moe.balance_loss", "moe.z_loss", "moe.bias_update_rate"})
    EXPECT_NE(help.find(k), std::string::npos) << k;
  EXPECT_NE(help.find("[default: auto]"), std::string::npos);
  EXPECT_NE(help.find("divided by k"), std::string::npos) << "the top-k normalisation is stated";
}

// Every key with a fixed set of names (model.ffn, moe.routing, train.precision,
// train.fp32_engine, data.source, run.device) is an enum parsed once: each
// name round-trips through INI text, the CLI and to_ini; any other value (a
// wrong case, a trailing space, empty) is refused when it is SET, naming the
// key, the allowed names and the value, with the usage exit code. (What
// train.fp32_engine and run.device resolve to: backend.fp32_engine.*,
// backend.device.*.)
TEST(Config, EnumKeysRoundTripAndRefuseOtherNames) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> keys = {
      {"model.ffn", {"moe", "dense"}},
      {"moe.routing", {"expert_choice", "token_choice"}},
      {"train.precision", {"fp32", "bf16", "auto"}},
      {"train.fp32_engine", {"auto", "openblas", "onednn"}},
      {"data.source", {"synthetic", "shards"}},
      {"run.device", {"cpu", "cuda", "auto"}}};
  auto value_of = [](const Config& c, const std::string& key) {
    for (const auto& [k, v] : c.to_pairs())
      if (k == key) return v;
    return std::string("<missing>");
  };
  for (const auto& [key, names] : keys) {
    std::string allowed;
    for (const std::string& n : names) {
      Config c;
      set_config_value(c, key, n);
      EXPECT_EQ(value_of(c, key), n) << key;
      EXPECT_EQ(value_of(config_from_ini_text(c.to_ini(), "rt"), key), n) << key;
      EXPECT_EQ(value_of(parse({"--" + key, n}).config, key), n) << key;
      allowed += (allowed.empty() ? "" : ", ") + n;
    }
    for (const std::string& bad : std::vector<std::string>{"nope", "", names[0] + " ", "AUTO"}) {
      Config c;
      try {
        set_config_value(c, key, bad);
        FAIL() << key << " accepted '" << bad << "'";
      } catch (const ConfigError& e) {
        EXPECT_EQ(std::string(e.what()), "config key '" + key + "': must be one of " + allowed + ", got '" + bad + "'");
        EXPECT_EQ(e.exit_code(), kExitUsage);
      }
    }
  }
  const Config d;
  EXPECT_EQ(d.model.ffn, Ffn::moe);
  EXPECT_EQ(d.moe.routing, Routing::expert_choice);
  EXPECT_EQ(d.train.precision, PrecisionChoice::fp32);
  EXPECT_EQ(d.train.fp32_engine, Fp32EngineChoice::automatic);
  EXPECT_EQ(d.data.source, DataSource::synthetic);
  EXPECT_EQ(d.run.device, DeviceChoice::automatic);
  EXPECT_NE(d.to_ini().find("\nfp32_engine = auto\n"), std::string::npos) << d.to_ini();
  EXPECT_NE(d.to_ini().find("\ndevice = auto\n"), std::string::npos) << d.to_ini();
  const std::string f = write_tmp("[train]\nfp32_engine = onednn\n[run]\ndevice = cpu\n");
  EXPECT_EQ(parse({"--config", f}).config.train.fp32_engine, Fp32EngineChoice::onednn);
  EXPECT_EQ(parse({"--config", f, "--train.fp32_engine", "openblas"}).config.train.fp32_engine,
            Fp32EngineChoice::openblas);
  EXPECT_EQ(parse({"--config", f, "--run.device", "cuda"}).config.run.device, DeviceChoice::cuda);
  std::remove(f.c_str());
  // A bad name in an INI file is refused at parse time, naming the key.
  try {
    config_from_ini_text("[moe]\nrouting = hash\n", "bad.ini");
    FAIL() << "routing = hash accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'moe.routing'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("got 'hash'"), std::string::npos) << e.what();
  }
  std::string help;
  for (char ch : config_help()) {
    const bool space = ch == ' ' || ch == '\n';
    if (!space || (!help.empty() && help.back() != ' ')) help += space ? ' ' : ch;
  }
  for (const auto& [key, expect] : std::vector<std::pair<std::string, std::string>>{
           {"train.fp32_engine", "openblas | onednn | auto"}, {"run.device", "cpu | cuda | auto"}}) {
    const size_t at = help.find("--" + key);
    ASSERT_NE(at, std::string::npos) << help;
    const std::string entry = help.substr(at, help.find(" --", at + 5) - at);
    EXPECT_NE(entry.find(expect), std::string::npos) << entry;
    EXPECT_NE(entry.find("[default: auto]"), std::string::npos) << entry;
  }
}
