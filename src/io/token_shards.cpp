// llm.c token shards: writer, validating reader, and a wrapping TokenSource.
// Shards are memory-mapped: GPT-2 shards are 100 M tokens each and a rank
// touches only the pages of the sequences it trains on.
#include "finemoe/shards.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "finemoe/error.hpp"

namespace finemoe {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Checks a header already in memory against the file size; names the file.
ShardHeader check_header(const std::string& path, const int32_t* h, int64_t file_bytes) {
  ShardHeader out;
  out.file_bytes = file_bytes;
  if (file_bytes < kShardHeaderBytes)
    throw DataError("token shard '" + path + "': file is " + std::to_string(file_bytes) +
                    " bytes, shorter than the 1024-byte header (truncated or not a shard)");
  out.magic = h[0];
  out.version = h[1];
  out.tokens = h[2];
  if (out.magic != kShardMagic)
    throw DataError("token shard '" + path + "': bad magic " + std::to_string(out.magic) + " (expected " +
                    std::to_string(kShardMagic) + "; not an llm.c token shard)");
  if (out.version != kShardVersion)
    throw DataError("token shard '" + path + "': unsupported version " + std::to_string(out.version) +
                    " (only version 1, uint16 tokens, is supported)");
  if (out.tokens < 0)
    throw DataError("token shard '" + path + "': negative token count " + std::to_string(out.tokens) + " in header");
  if (out.tokens == 0) throw DataError("token shard '" + path + "': empty shard (header says 0 tokens)");
  const int64_t want = kShardHeaderBytes + 2 * out.tokens;
  if (file_bytes != want)
    throw DataError("token shard '" + path + "': header says " + std::to_string(out.tokens) + " tokens (" +
                    std::to_string(want) + " bytes) but the file has " + std::to_string(file_bytes) + " bytes" +
                    (file_bytes < want ? " (truncated)" : " (trailing data)"));
  return out;
}

void check_tokens(const std::string& path, const uint16_t* t, int64_t n, int64_t vocab) {
  uint16_t mx = 0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, t[i]);
  if (int64_t(mx) < vocab) return;
  for (int64_t i = 0; i < n; ++i)
    if (int64_t(t[i]) >= vocab)
      throw DataError("token shard '" + path + "': token " + std::to_string(t[i]) + " at index " + std::to_string(i) +
                      " is >= the vocabulary size " + std::to_string(vocab) + " (model.vocab_size)");
}

}  // namespace

void write_shard(const std::string& path, const int32_t* tokens, int64_t n) {
  std::vector<uint16_t> body(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] > 65535)
      throw DataError("token shard '" + path + "': token " + std::to_string(tokens[i]) + " at index " +
                      std::to_string(i) + " does not fit the uint16 shard format");
    body[size_t(i)] = uint16_t(tokens[i]);
  }
  if (n <= 0 || n > INT32_MAX) throw DataError("token shard '" + path + "': token count " + std::to_string(n) + " out of range");
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = int32_t(n);
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw DataError("token shard '" + path + "': cannot create: " + errno_text());
  bool ok = std::fwrite(header, sizeof(header), 1, f) == 1 &&
            std::fwrite(body.data(), 2, size_t(n), f) == size_t(n);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw DataError("token shard '" + path + "': write failed: " + errno_text());
  }
}

ShardHeader read_shard_header(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw DataError("token shard '" + path + "': cannot open: " + errno_text());
  int32_t h[kShardHeaderInts] = {};
  size_t got = std::fread(h, 1, sizeof(h), f);
  std::fseek(f, 0, SEEK_END);
  int64_t bytes = std::ftell(f);
  std::fclose(f);
  (void)got;
  return check_header(path, h, bytes);
}

std::vector<uint16_t> read_shard(const std::string& path, int64_t vocab) {
  ShardHeader h = read_shard_header(path);
  std::vector<uint16_t> t(static_cast<size_t>(h.tokens));
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw DataError("token shard '" + path + "': cannot open: " + errno_text());
  bool ok = std::fseek(f, kShardHeaderBytes, SEEK_SET) == 0 && std::fread(t.data(), 2, t.size(), f) == t.size();
  std::fclose(f);
  if (!ok) throw DataError("token shard '" + path + "': read failed (file changed while reading?)");
  check_tokens(path, t.data(), h.tokens, vocab);
  return t;
}

std::vector<std::string> expand_shard_glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  if (out.empty()) throw DataError("token shards: no file matches '" + pattern + "'");
  std::sort(out.begin(), out.end());
  return out;
}

ShardSource::ShardSource(const std::string& pattern, int64_t vocab) : pattern_(pattern), vocab_(vocab) {
  files_ = expand_shard_glob(pattern);
  try {
    for (const auto& path : files_) {
      int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) throw DataError("token shard '" + path + "': cannot open: " + errno_text());
      struct stat st{};
      if (::fstat(fd, &st) != 0) {
        ::close(fd);
        throw DataError("token shard '" + path + "': cannot stat: " + errno_text());
      }
      Mapped m;
      m.bytes = int64_t(st.st_size);
      if (m.bytes > 0) {
        m.base = ::mmap(nullptr, size_t(m.bytes), PROT_READ, MAP_PRIVATE, fd, 0);
        if (m.base == MAP_FAILED) {
          ::close(fd);
          throw DataError("token shard '" + path + "': mmap failed: " + errno_text());
        }
      }
      ::close(fd);
      maps_.push_back(m);  // owned from here on, unmapped by the destructor
      int32_t empty[kShardHeaderInts] = {};
      const int32_t* h = m.bytes >= kShardHeaderBytes ? static_cast<const int32_t*>(m.base) : empty;
      ShardHeader hd = check_header(path, h, m.bytes);
      maps_.back().tokens = reinterpret_cast<const uint16_t*>(static_cast<const char*>(m.base) + kShardHeaderBytes);
      maps_.back().n = hd.tokens;
      check_tokens(path, maps_.back().tokens, hd.tokens, vocab);
      starts_.push_back(total_);
      total_ += hd.tokens;
    }
  } catch (...) {
    for (auto& m : maps_)
      if (m.base) ::munmap(m.base, size_t(m.bytes));
    throw;
  }
}

ShardSource::~ShardSource() {
  for (auto& m : maps_)
    if (m.base) ::munmap(m.base, size_t(m.bytes));
}

std::string ShardSource::describe() const {
  std::ostringstream os;
  os << "shards(" << pattern_ << ": " << files_.size() << " files, " << total_ << " tokens, vocab " << vocab_ << ")";
  return os.str();
}

void ShardSource::read(int64_t pos, int64_t n, int32_t* out) const {
  if (pos < 0 || n < 0) throw Error("token shards: negative read position or length");
  pos %= total_;
  while (n > 0) {
    // Shard holding pos: last start <= pos.
    size_t s = size_t(std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin()) - 1;
    const int64_t off = pos - starts_[s], take = std::min(n, maps_[s].n - off);
    const uint16_t* src = maps_[s].tokens + off;
    for (int64_t i = 0; i < take; ++i) out[i] = src[i];
    out += take;
    n -= take;
    pos = (pos + take) % total_;
  }
}

}  // namespace finemoe
