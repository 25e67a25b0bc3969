// moe-data: turns text into llm.c token shards, inspects shards, materialises
// the synthetic corpus and reports its entropy rate.
//
//   moe-data prepare --input FILES|DIR --out DIR --tokenizer bytes [--val-fraction 0.1] [--shard-tokens N]
//   moe-data inspect SHARD...
//   moe-data synth --out DIR --tokens N [--val-tokens N] [--shard-tokens N]   (config keys data.*, model.vocab_size)
//   moe-data entropy [--docs N]                                                (config keys data.*, model.vocab_size)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "finemoe/app.hpp"
#include "finemoe/config.hpp"
#include "finemoe/error.hpp"
#include "finemoe/log.hpp"
#include "finemoe/shards.hpp"
#include "finemoe/synthetic.hpp"

namespace fs = std::filesystem;
using namespace finemoe;

namespace {

const char* kUsage =
    "usage: moe-data COMMAND [options] [--section.key value ...]\n"
    "\n"
    "commands:\n"
    "  prepare --input FILES|DIR --out DIR --tokenizer bytes [--val-fraction 0.1] [--shard-tokens N]\n"
    "          UTF-8 text -> byte tokens (vocab 256) -> OUT/train_NNNNNN.bin, OUT/val_NNNNNN.bin\n"
    "          (FILES: comma-separated; DIR: every regular file in it, sorted by name)\n"
    "  inspect SHARD...      header, token count, min/max, top tokens, unigram entropy\n"
    "  synth --out DIR --tokens N [--val-tokens N]\n"
    "          the synthetic corpus of this config (data.*, model.vocab_size) as shards\n"
    "  entropy [--docs N]    the synthetic corpus's entropy rate (nats/token) for this config\n"
    "\n"
    "exit codes: 0 ok, 1 failure, 2 bad command line/config, 3 bad input data";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t int_option(const ParsedArgs& a, const std::string& name, int64_t lo) {
  const std::string& v = a.app.at(name);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo)
    throw ConfigError("--" + name + ": expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return x;
}

std::string shard_name(const std::string& dir, const std::string& split, int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "_%06lld.bin", static_cast<long long>(i));
  return (fs::path(dir) / (split + buf)).string();
}

void ensure_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error("--out: cannot create directory '" + dir + "': " + ec.message());
}

// Writes tokens as consecutive shards of at most shard_tokens; returns the paths.
std::vector<std::string> write_split(const std::string& dir, const std::string& split, const std::vector<int32_t>& t,
                                     int64_t shard_tokens) {
  std::vector<std::string> out;
  for (int64_t i = 0, s = 0; i < int64_t(t.size()); i += shard_tokens, ++s) {
    int64_t n = std::min<int64_t>(shard_tokens, int64_t(t.size()) - i);
    out.push_back(shard_name(dir, split, s));
    write_shard(out.back(), t.data() + i, n);
  }
  return out;
}

// First invalid UTF-8 byte offset, or -1. Byte tokens would accept anything,
// but a binary file given by mistake should be an error, not a corpus.
int64_t invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const int64_t n = int64_t(s.size());
  for (int64_t i = 0; i < n;) {
    unsigned c = p[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || c == 0 || i + len > n) return i;
    for (int k = 1; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return -1;
}

std::vector<std::string> input_files(const std::string& spec) {
  std::vector<std::string> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    std::error_code ec;
    if (fs::is_directory(item, ec)) {
      std::vector<std::string> in_dir;
      for (const auto& e : fs::directory_iterator(item))
        if (e.is_regular_file()) in_dir.push_back(e.path().string());
      std::sort(in_dir.begin(), in_dir.end());
      if (in_dir.empty()) throw DataError("--input: directory '" + item + "' has no files");
      out.insert(out.end(), in_dir.begin(), in_dir.end());
    } else if (fs::is_regular_file(item, ec)) {
      out.push_back(item);
    } else {
      throw DataError("--input: '" + item + "' is not a readable file or directory");
    }
  }
  if (out.empty()) throw ConfigError("--input: required (text files or a directory)");
  return out;
}

int cmd_prepare(const ParsedArgs& a) {
  if (a.app.at("tokenizer") != "bytes")
    throw ConfigError("--tokenizer: only 'bytes' is built in (GPT-2 shards from llm.c's scripts are used as they are), got '" +
                      a.app.at("tokenizer") + "'");
  const std::string out_dir = a.app.at("out");
  if (out_dir.empty()) throw ConfigError("--out: required (output directory)");
  double vf = 0;
  {
    const std::string& v = a.app.at("val-fraction");
    char* end = nullptr;
    vf = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(vf > 0 && vf < 1))
      throw ConfigError("--val-fraction: expected a number in (0, 1), got '" + v + "'");
  }
  const int64_t shard_tokens = int_option(a, "shard-tokens", 1);
  std::string spec = a.app.at("input");
  for (size_t i = 1; i < a.positional.size(); ++i) spec += "," + a.positional[i];
  const auto files = input_files(spec);

  std::vector<int32_t> tokens;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw DataError("--input: cannot read '" + f + "'");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    int64_t bad = invalid_utf8(text);
    if (bad >= 0)
      throw DataError("--input: '" + f + "' is not UTF-8 text (invalid or NUL byte at offset " + std::to_string(bad) + ")");
    for (unsigned char c : text) tokens.push_back(int32_t(c));
    log::info("read %s: %zu bytes", f.c_str(), text.size());
  }
  if (tokens.size() < 2) throw DataError("--input: no text to tokenise (inputs are empty)");
  // The tail of the concatenated text is the validation split.
  int64_t n_val = std::clamp<int64_t>(int64_t(std::llround(vf * double(tokens.size()))), 1, int64_t(tokens.size()) - 1);
  std::vector<int32_t> train(tokens.begin(), tokens.end() - n_val), val(tokens.end() - n_val, tokens.end());
  ensure_dir(out_dir);
  auto tr = write_split(out_dir, "train", train, shard_tokens);
  auto va = write_split(out_dir, "val", val, shard_tokens);
  log::info("wrote %zu train shard(s) (%zu tokens) and %zu val shard(s) (%zu tokens) to %s", tr.size(), train.size(),
            va.size(), val.size(), out_dir.c_str());
  log::info("train with: --data.source shards --data.train_shards '%s/train_*.bin' --data.val_shards '%s/val_*.bin'",
            out_dir.c_str(), out_dir.c_str());
  return kExitOk;
}

int cmd_inspect(const ParsedArgs& a) {
  if (a.positional.size() < 2) throw ConfigError("inspect: give one or more shard files");
  const int64_t vocab = int_option(a, "vocab", 2);
  for (size_t i = 1; i < a.positional.size(); ++i) {
    const std::string& path = a.positional[i];
    ShardHeader h = read_shard_header(path);
    std::vector<uint16_t> t = read_shard(path, vocab);
    std::vector<int64_t> hist(65536, 0);
    for (uint16_t v : t) ++hist[v];
    int64_t mn = 65535, mx = 0, distinct = 0;
    double H = 0;
    std::vector<std::pair<int64_t, int>> top;
    for (int v = 0; v < 65536; ++v) {
      if (!hist[size_t(v)]) continue;
      mn = std::min<int64_t>(mn, v);
      mx = std::max<int64_t>(mx, v);
      ++distinct;
      double p = double(hist[size_t(v)]) / double(t.size());
      H -= p * std::log(p);
      top.emplace_back(hist[size_t(v)], v);
    }
    std::sort(top.rbegin(), top.rend());
    std::printf("%s\n  header: magic %d, version %d, tokens %lld (%lld bytes)\n", path.c_str(), h.magic, h.version,
                static_cast<long long>(h.tokens), static_cast<long long>(h.file_bytes));
    std::printf("  tokens: min %lld, max %lld, distinct %lld\n", static_cast<long long>(mn), static_cast<long long>(mx),
                static_cast<long long>(distinct));
    std::printf("  unigram entropy: %.4f nats/token (%.4f bits)\n", H, H / std::log(2.0));
    std::printf("  top tokens:");
    for (size_t k = 0; k < std::min<size_t>(10, top.size()); ++k)
      std::printf(" %d:%.2f%%", top[k].second, 100.0 * double(top[k].first) / double(t.size()));
    std::printf("\n");
  }
  return kExitOk;
}

int cmd_synth(const ParsedArgs& a, const Config& cfg) {
  const std::string out_dir = a.app.at("out");
  if (out_dir.empty()) throw ConfigError("--out: required (output directory)");
  const int64_t n = int_option(a, "tokens", 1);
  const int64_t n_val = a.app.at("val-tokens").empty() ? std::max<int64_t>(1, n / 10) : int_option(a, "val-tokens", 1);
  const int64_t shard_tokens = int_option(a, "shard-tokens", 1);
  const SynthParams p = SynthParams::from_config(cfg);
  ensure_dir(out_dir);
  for (int split = 0; split < 2; ++split) {
    SyntheticCorpus src(p, split == 0 ? kSynthTrainStream : kSynthValStream);
    const char* name = split == 0 ? "train" : "val";
    const int64_t total = split == 0 ? n : n_val;
    std::vector<int32_t> buf;
    auto t0 = std::chrono::steady_clock::now();
    double gen_s = 0;
    for (int64_t pos = 0, s = 0; pos < total; pos += shard_tokens, ++s) {
      buf.resize(size_t(std::min(shard_tokens, total - pos)));
      auto g0 = std::chrono::steady_clock::now();
      src.read(pos, int64_t(buf.size()), buf.data());
      gen_s += seconds_since(g0);
      write_shard(shard_name(out_dir, name, s), buf.data(), int64_t(buf.size()));
      log::info("%s: %lld / %lld tokens (%.1f s)", name, static_cast<long long>(pos + int64_t(buf.size())),
                static_cast<long long>(total), seconds_since(t0));
    }
    log::info("%s: generated at %.1f M tokens/s (one thread)", name, double(total) / std::max(gen_s, 1e-9) / 1e6);
  }
  SyntheticCorpus src(p, kSynthTrainStream);
  double se = 0;
  double h = src.entropy_rate(&se);
  log::info("%s", src.describe().c_str());
  log::info("entropy rate: %.4f +- %.4f nats/token (use --model.vocab_size %lld to train on these shards)", h, se,
            static_cast<long long>(p.vocab));
  return kExitOk;
}

int cmd_entropy(const ParsedArgs& a, const Config& cfg) {
  const SynthParams p = SynthParams::from_config(cfg);
  SyntheticCorpus src(p, kSynthTrainStream);
  const int64_t docs = a.app.at("docs").empty() ? src.default_entropy_docs() : int_option(a, "docs", 2);
  auto t0 = std::chrono::steady_clock::now();
  EntropyEstimate e = src.estimate_entropy(kSynthEntropyStream, 0, docs);
  std::printf("%s\n", src.describe().c_str());
  std::printf("entropy rate: %.5f +- %.5f nats/token (%.5f bits; %lld documents, %lld tokens, %.2f s)\n", e.mean,
              e.stderr_, e.mean / std::log(2.0), static_cast<long long>(e.docs), static_cast<long long>(e.tokens),
              seconds_since(t0));
  std::printf("uniform over the vocabulary: %.5f nats/token\n", std::log(double(p.vocab)));
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return finemoe::run_app("moe-data", [&]() -> int {
    const std::vector<AppOption> opts = {
        {"input", "prepare: text files (comma-separated) or a directory", "", true},
        {"out", "prepare/synth: output directory", "", true},
        {"tokenizer", "prepare: tokenizer (bytes)", "bytes", true},
        {"val-fraction", "prepare: fraction of the text (its tail) held out for validation", "0.1", true},
        {"shard-tokens", "prepare/synth: maximum tokens per shard", "100000000", true},
        {"tokens", "synth: training tokens to write", "", true},
        {"val-tokens", "synth: validation tokens to write (default tokens/10)", "", true},
        {"docs", "entropy: documents to average over (default ~2^19 tokens)", "", true},
        {"vocab", "inspect: token ids must be below this", "65536", true},
    };
    ParsedArgs a = parse_args(argc, argv, kUsage, opts, /*allow_positional=*/true);
    if (a.help) {
      std::cout << a.help_text << "\n";
      return kExitOk;
    }
    if (a.print_config) {
      std::cout << a.config.to_ini();
      return kExitOk;
    }
    if (a.positional.empty()) throw ConfigError(std::string("missing command (prepare | inspect | synth | entropy)\n") + kUsage);
    const std::string cmd = a.positional[0];
    if (cmd != "inspect" && cmd != "prepare" && a.positional.size() > 1)
      throw ConfigError("unexpected argument '" + a.positional[1] + "' for command " + cmd);
    if (cmd == "prepare") return cmd_prepare(a);
    if (cmd == "inspect") return cmd_inspect(a);
    if (cmd == "synth" || cmd == "entropy") {
      a.config.validate();
      if (cmd == "synth") {
        if (a.app.at("tokens").empty()) throw ConfigError("--tokens: required for synth");
        if (a.config.model.vocab_size > 65536) throw ConfigError("model.vocab_size: shards hold uint16 tokens (<= 65536)");
        return cmd_synth(a, a.config);
      }
      return cmd_entropy(a, a.config);
    }
    throw ConfigError("unknown command '" + cmd + "' (prepare | inspect | synth | entropy)");
  });
}
