// llm.c token shards: round trip, concatenation and wrap-around, and every
// malformed file rejected with a DataError that names the file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <cmath>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/shards.hpp"

using namespace finemoe;
namespace fs = std::filesystem;

namespace {
class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("finemoe_data_shards_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Raw file: header ints then uint16 tokens (for building bad shards).
  void raw(const std::string& name, std::vector<int32_t> header, const std::vector<uint16_t>& toks) {
    header.resize(256, 0);
    std::ofstream f(path(name), std::ios::binary);
    f.write(reinterpret_cast<const char*>(header.data()), 1024);
    f.write(reinterpret_cast<const char*>(toks.data()), std::streamsize(toks.size() * 2));
  }
  // Expects a DataError whose message names the file and contains `what`.
  void expect_error(const std::string& name, const std::string& what, int64_t vocab = 65536) {
    try {
      ShardSource s(path(name), vocab);
      FAIL() << name << ": no error";
    } catch (const DataError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(path(name)), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
      EXPECT_EQ(e.exit_code(), kExitDataError);
    }
  }
  fs::path dir_;
};
}  // namespace

TEST_F(ShardTest, RoundTrip) {
  std::vector<int32_t> t = {0, 1, 65535, 500, 7, 7, 42};
  write_shard(path("a.bin"), t.data(), int64_t(t.size()));
  EXPECT_EQ(fs::file_size(path("a.bin")), 1024u + 2 * t.size());
  ShardHeader h = read_shard_header(path("a.bin"));
  EXPECT_EQ(h.magic, 20240520);
  EXPECT_EQ(h.version, 1);
  EXPECT_EQ(h.tokens, 7);
  auto back = read_shard(path("a.bin"));
  ASSERT_EQ(back.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(int32_t(back[i]), t[i]);
  ShardSource s(path("a.bin"), 65536);
  std::vector<int32_t> r(7);
  s.read(0, 7, r.data());
  EXPECT_EQ(r, t);
}

TEST_F(ShardTest, ConcatenatesSortedShardsAndWrapsAround) {
  std::vector<int32_t> a = {1, 2, 3}, b = {4, 5}, c = {6, 7, 8, 9};
  write_shard(path("x_000001.bin"), b.data(), 2);
  write_shard(path("x_000000.bin"), a.data(), 3);
  write_shard(path("x_000002.bin"), c.data(), 4);
  ShardSource s(path("x_*.bin"), 10);
  EXPECT_EQ(s.total_tokens(), 9);
  EXPECT_EQ(s.files().size(), 3u);
  std::vector<int32_t> r(13);
  s.read(2, 13, r.data());  // 3 4 5 6 7 8 9 | 1 2 3 4 5 6
  EXPECT_EQ(r, (std::vector<int32_t>{3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6}));
  std::vector<int32_t> far(2);
  s.read(9 * 1000 + 4, 2, far.data());
  EXPECT_EQ(far, (std::vector<int32_t>{5, 6}));
}

TEST_F(ShardTest, BadMagic) {
  raw("m.bin", {1234, 1, 2}, {1, 2});
  expect_error("m.bin", "bad magic");
}

TEST_F(ShardTest, BadVersion) {
  raw("v.bin", {20240520, 2, 2}, {1, 2, 3, 4});
  expect_error("v.bin", "unsupported version 2");
}

TEST_F(ShardTest, TruncatedBody) {
  raw("t.bin", {20240520, 1, 100}, {1, 2, 3});
  expect_error("t.bin", "truncated");
}

TEST_F(ShardTest, TrailingData) {
  raw("l.bin", {20240520, 1, 2}, {1, 2, 3});
  expect_error("l.bin", "trailing");
}

TEST_F(ShardTest, ShorterThanHeader) {
  std::ofstream(path("h.bin")) << "hello";
  expect_error("h.bin", "shorter than the 1024-byte header");
}

TEST_F(ShardTest, EmptyShard) {
  raw("e.bin", {20240520, 1, 0}, {});
  expect_error("e.bin", "empty shard");
}

TEST_F(ShardTest, TokenOutOfVocabulary) {
  std::vector<int32_t> t = {1, 2, 300, 4};
  write_shard(path("o.bin"), t.data(), 4);
  expect_error("o.bin", "token 300 at index 2", 256);
  EXPECT_THROW(read_shard(path("o.bin"), 256), DataError);
  EXPECT_NO_THROW(ShardSource(path("o.bin"), 301));
}

TEST_F(ShardTest, NoMatchingFile) {
  try {
    ShardSource s(path("nothing_*.bin"), 100);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("nothing_*.bin"), std::string::npos);
  }
}

TEST_F(ShardTest, WriterRejectsTokensThatDoNotFit) {
  std::vector<int32_t> t = {1, 70000};
  EXPECT_THROW(write_shard(path("w.bin"), t.data(), 2), DataError);
  EXPECT_FALSE(fs::exists(path("w.bin")));
}

TEST_F(ShardTest, ConfigSelectsShardSources) {
  std::vector<int32_t> a = {1, 2, 3}, b = {9, 8};
  write_shard(path("train_000000.bin"), a.data(), 3);
  write_shard(path("val_000000.bin"), b.data(), 2);
  Config cfg;
  set_config_value(cfg, "data.source", "shards");
  set_config_value(cfg, "data.train_shards", path("train_*.bin"));
  set_config_value(cfg, "data.val_shards", path("val_*.bin"));
  auto tr = make_train_source(cfg);
  auto va = make_val_source(cfg);
  std::vector<int32_t> r(2);
  va->read(0, 2, r.data());
  EXPECT_EQ(r, b);
  tr->read(1, 2, r.data());
  EXPECT_EQ(r, (std::vector<int32_t>{2, 3}));
  EXPECT_TRUE(std::isnan(tr->entropy_rate()));
}
