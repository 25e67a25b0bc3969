#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "finemoe/config.hpp"
#include "finemoe/error.hpp"

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
  c.moe.routing = "hash";
  expect_invalid(c, "moe.routing");
  c = Config();
  c.train.batch_size = 6;  // not divisible over 4 ranks
  c.moe.routing = "token_choice";
  expect_invalid(c, "train.batch_size", 4);
  c = Config();
  c.parallel.expert_parallel = 3;
  c.train.batch_size = 12;
  expect_invalid(c, "parallel.expert_parallel", 3);  // 3 does not divide 8 experts
  c = Config();
  c.train.batch_size = 2;  // 2·64 = 128 tokens < group 256
  expect_invalid(c, "moe.group_size");
  c = Config();
  c.train.precision = "fp16";
  expect_invalid(c, "train.precision");
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
  c.moe.routing = "token_choice";
  EXPECT_NO_THROW(c.validate(1));
  c.moe.routing = "expert_choice";
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
