// Refuse a config whose training state cannot fit, before allocating any of
// it: a model too large for the machine otherwise ends, minutes later, in a
// std::bad_alloc (or the OOM killer) that names no key.
#pragma once
#include <cstdint>

#include "finemoe/config.hpp"

namespace finemoe {

// Bytes this process may still allocate: MemAvailable from /proc/meminfo,
// else physical pages times the page size (sysconf); 0 if neither is known.
uint64_t available_memory_bytes();

// Throws ConfigError (exit 2) when counting.hpp's per-rank estimate for `c` on
// `world_size` ranks, times the `ranks_on_node` ranks sharing this machine,
// exceeds `available` bytes. The message gives both numbers and names the
// keys that drive the estimate. `available` = 0 (unknown) skips the check.
void check_memory_fits(const Config& c, int world_size, int ranks_on_node, uint64_t available);

}  // namespace finemoe
