#include "finemoe/agreement.hpp"

#include <cstdint>
#include <map>

namespace finemoe {
namespace {

// FNV-1a 64: stable across platforms and builds, enough to tell configs apart.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

// Canonical text of a command + config: NUL-separated, so no value (a run
// directory with spaces or '=') can run into the next.
std::string encode(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string out;
  for (const auto& [k, v] : pairs) {
    out += k;
    out += '\0';
    out += v;
    out += '\0';
  }
  return out;
}
std::vector<std::pair<std::string, std::string>> decode(const std::string& s) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t p = 0;
  while (p < s.size()) {
    const size_t a = s.find('\0', p);
    if (a == std::string::npos) break;
    const size_t b = s.find('\0', a + 1);
    if (b == std::string::npos) break;
    out.emplace_back(s.substr(p, a - p), s.substr(a + 1, b - a - 1));
    p = b + 1;
  }
  return out;
}

constexpr const char* kCommandKey = "(command)";

std::vector<std::pair<std::string, std::string>> canonical_pairs(const StartStatus& st) {
  std::vector<std::pair<std::string, std::string>> pairs{{kCommandKey, st.command}};
  pairs.insert(pairs.end(), st.config.begin(), st.config.end());
  return pairs;
}

// Each rank failed: one line per distinct message, with the ranks that had it.
[[noreturn]] void throw_failures(const Comm& comm, const std::vector<uint64_t>& rec, int fields,
                                 const std::string& my_message) {
  const int P = comm.size(), me = comm.rank();
  auto code = [&](int r) { return int(rec[size_t(r) * fields + 0]); };
  auto msg_hash = [&](int r) { return rec[size_t(r) * fields + 3]; };
  // The lowest rank holding each distinct message sends its text.
  bool first_with_text = code(me) != 0;
  for (int r = 0; r < me && first_with_text; ++r)
    if (code(r) != 0 && msg_hash(r) == msg_hash(me)) first_with_text = false;
  const std::vector<std::string> texts = comm.allgather(first_with_text ? my_message : std::string());
  int lowest = -1, n_failed = 0;
  bool all_alike = true;
  for (int r = 0; r < P; ++r) {
    if (code(r) == 0) {
      all_alike = false;
      continue;
    }
    ++n_failed;
    if (lowest < 0) lowest = r;
    if (msg_hash(r) != msg_hash(lowest)) all_alike = false;
  }
  std::string out;
  if (all_alike) {
    out = texts[size_t(lowest)];
  } else {
    for (int r = 0; r < P; ++r) {
      if (code(r) == 0 || texts[size_t(r)].empty()) continue;
      std::vector<int> ranks;
      for (int q = r; q < P; ++q)
        if (code(q) != 0 && msg_hash(q) == msg_hash(r)) ranks.push_back(q);
      if (!out.empty()) out += "\n  ";
      out += "on " + format_rank_list(ranks) + " of " + std::to_string(P) + ": " + texts[size_t(r)];
    }
  }
  throw CollectiveError(out, code(lowest));
}

// The configs differ: list each differing key, its values and their ranks.
[[noreturn]] void throw_mismatch(const Comm& comm, const std::string& my_canon) {
  std::string ref = my_canon;
  comm.broadcast(ref, 0);
  const auto ref_pairs = decode(ref), my_pairs = decode(my_canon);
  std::map<std::string, std::string> ref_map(ref_pairs.begin(), ref_pairs.end());
  std::vector<std::pair<std::string, std::string>> my_diff;
  const bool command_differs = ref_pairs.empty() || my_pairs.empty() || my_pairs[0] != ref_pairs[0];
  for (const auto& kv : my_pairs) {
    // A different command (--help on one rank) makes the rest meaningless.
    if (command_differs && kv.first != kCommandKey) continue;
    auto it = ref_map.find(kv.first);
    if (it == ref_map.end() || it->second != kv.second) my_diff.push_back(kv);
  }
  const std::vector<std::string> diffs = comm.allgather(encode(my_diff));
  // key -> value -> ranks; ranks not listed under a key hold rank 0's value.
  std::map<std::string, std::map<std::string, std::vector<int>>> by_key;
  for (int r = 1; r < comm.size(); ++r)
    for (const auto& [k, v] : decode(diffs[size_t(r)])) by_key[k][v].push_back(r);
  std::string out =
      "ranks disagree on the resolved config (every rank must get the same config file and --section.key "
      "overrides):";
  for (const auto& [k, _] : ref_pairs) {  // schema order
    auto it = by_key.find(k);
    if (it == by_key.end()) continue;
    std::vector<int> with_ref;
    for (int r = 0; r < comm.size(); ++r) {
      bool listed = false;
      for (const auto& [v, ranks] : it->second)
        for (int q : ranks) listed = listed || q == r;
      if (!listed) with_ref.push_back(r);
    }
    out += "\n  " + (k == kCommandKey ? std::string("command") : k) + ": '" + ref_map[k] + "' on " +
           format_rank_list(with_ref);
    for (const auto& [v, ranks] : it->second) out += " | '" + v + "' on " + format_rank_list(ranks);
  }
  throw CollectiveError(out, kExitUsage);
}

}  // namespace

std::string format_rank_list(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (i > 0) out += ", ";
    out += std::to_string(ranks[i]);
    if (j > i) out += "-" + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

StartVerdict agree_on_start(const Comm& comm, const StartStatus& mine) {
  std::string message = mine.message;
  if (mine.code != kExitOk && message.empty()) message = "set-up failed (exit code " + std::to_string(mine.code) + ")";
  const std::string canon = encode(canonical_pairs(mine));
  // One fixed-size record per rank: code, stop, config hash, message hash.
  constexpr int kFields = 4;
  const std::vector<uint64_t> rec =
      comm.allgather(std::vector<uint64_t>{uint64_t(uint32_t(mine.code)), mine.stop ? 1u : 0u,
                                           mine.code == kExitOk ? fnv1a(canon) : 0, fnv1a(message)});
  bool any_failed = false, any_stop = false, same_config = true;
  for (int r = 0; r < comm.size(); ++r) {
    any_failed = any_failed || rec[size_t(r) * kFields] != 0;
    any_stop = any_stop || rec[size_t(r) * kFields + 1] != 0;
    same_config = same_config && rec[size_t(r) * kFields + 2] == rec[2];
  }
  if (any_failed) throw_failures(comm, rec, kFields, message);
  if (!same_config) throw_mismatch(comm, canon);
  return any_stop ? StartVerdict::stop : StartVerdict::proceed;
}

}  // namespace finemoe
