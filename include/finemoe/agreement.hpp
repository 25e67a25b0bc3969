// Ranks agree before they work.
//
// Every rank of a launch parses its own command line and config file. If one
// rank's parse fails (its config file is missing on that node, a value is bad)
// or its resolved config differs from the others' (an MPMD launch with other
// overrides, another file of the same name), a rank that went ahead would wait
// forever in its first collective, or exchange messages of a shape its peer
// does not expect (a different d_model corrupts the receive buffers). So the
// FIRST collective of moe-train is agree_on_start: parse errors happen before
// it and travel in it, with a hash of each rank's resolved config and whether a
// stop signal already arrived, and it ends every rank the same way.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "finemoe/comm.hpp"
#include "finemoe/error.hpp"

namespace finemoe {

struct StartStatus {
  int code = kExitOk;    // this rank's set-up failure as an exit code, or 0
  std::string message;   // and its message
  std::string command;   // what this rank was asked to do ("train", "--help", ...): must agree too
  std::vector<std::pair<std::string, std::string>> config;  // resolved config (Config::to_pairs)
  bool stop = false;     // a stop signal arrived already
};

enum class StartVerdict { proceed, stop };

// Collective over the world of `comm`. Throws the same CollectiveError on
// every rank when
//   * any rank failed: the lowest failing rank's exit code; the message holds
//     each distinct failure once, with the ranks that had it (just the message
//     when every rank failed alike);
//   * the resolved configs differ: exit 2; the message lists each differing
//     key with its values and the ranks that hold them.
// Otherwise returns `stop` when any rank has a stop request, else `proceed`.
StartVerdict agree_on_start(const Comm& comm, const StartStatus& mine);

// "rank 3", "ranks 0-2, 5" (sorted ranks).
std::string format_rank_list(const std::vector<int>& ranks);

}  // namespace finemoe
