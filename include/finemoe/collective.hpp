// Agreeing on failure across ranks.
//
// A set-up step may fail on one rank alone (a shard that rank cannot open, an
// unreadable checkpoint hyperslab). If that rank simply threw, the others
// would wait forever in their next collective. run_collectively runs the step
// on every rank, then all ranks learn whether any failed; if so every rank
// throws the same CollectiveError (the lowest failing rank's message and exit
// code), which main() prints once from rank 0.
#pragma once
#include <functional>

#include "finemoe/comm.hpp"

namespace finemoe {

void run_collectively(const Comm& comm, const std::function<void()>& fn);

}  // namespace finemoe
