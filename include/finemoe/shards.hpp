// llm.c token shards: a 256 × int32 header (magic 20240520, version 1, token
// count, rest zero) followed by `count` uint16 tokens, little endian. GPT-2
// shards written by llm.c's data scripts are read unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "finemoe/data.hpp"

namespace finemoe {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Writes a shard (to PATH.tmp, then renamed). Tokens must be in [0, 65535].
// Throws DataError naming the file on I/O failure or a bad token.
void write_shard(const std::string& path, const int32_t* tokens, int64_t n);

struct ShardHeader {
  int32_t magic = 0, version = 0;
  int64_t tokens = 0;
  int64_t file_bytes = 0;
};
// Reads and checks the header and the file size against it (DataError otherwise).
ShardHeader read_shard_header(const std::string& path);
// Reads a whole shard, checking every token id < vocab (DataError otherwise).
std::vector<uint16_t> read_shard(const std::string& path, int64_t vocab = 65536);

// Files matching a glob pattern, sorted; DataError naming the pattern when none.
std::vector<std::string> expand_shard_glob(const std::string& pattern);

// The concatenation of the shards matching `pattern`, wrapping around at the
// end. Every shard is memory-mapped and validated when the source is built.
class ShardSource : public TokenSource {
 public:
  ShardSource(const std::string& pattern, int64_t vocab);
  ~ShardSource() override;
  ShardSource(const ShardSource&) = delete;
  ShardSource& operator=(const ShardSource&) = delete;
  void read(int64_t pos, int64_t n, int32_t* out) const override;
  int64_t vocab_size() const override { return vocab_; }
  std::string describe() const override;
  int64_t total_tokens() const { return total_; }
  const std::vector<std::string>& files() const { return files_; }

 private:
  struct Mapped {
    void* base = nullptr;
    int64_t bytes = 0;
    const uint16_t* tokens = nullptr;
    int64_t n = 0;
  };
  std::string pattern_;
  int64_t vocab_;
  std::vector<std::string> files_;
  std::vector<Mapped> maps_;
  std::vector<int64_t> starts_;  // cumulative token offset of each shard
  int64_t total_ = 0;
};

}  // namespace finemoe
