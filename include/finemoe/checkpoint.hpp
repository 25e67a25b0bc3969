// Checkpoints: runs/NAME/checkpoints/step_NNNNNNN.h5 (layout: h5layout.hpp).
//
// Full global tensors by name; expert tensors [E·G, ...] are written and read
// by each EP rank as its hyperslab with parallel HDF5 (MPI-IO), so a run saved
// on 4 ranks resumes on 2 or 1 and vice versa. Written to a temporary name,
// fsynced, renamed; LATEST is updated last; only the newest `keep` survive. A
// crash at any moment leaves LATEST naming a complete checkpoint.
#pragma once
#include <cstdint>
#include <string>

#include "finemoe/comm.hpp"
#include "finemoe/config.hpp"
#include "finemoe/params.hpp"

namespace finemoe {

struct TrainState {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // global token cursor (tokens consumed)
  uint64_t seed = 0;
};

// Collective over all ranks. Returns the checkpoint's path.
std::string save_checkpoint(const std::string& run_dir, const ParamStore& store, const TrainState& state,
                            const Config& cfg, const Comm& comm);

// Collective. Fills params and AdamW moments of `store` (this rank's part) and
// returns the state. Throws DataError (file unreadable/truncated, missing
// dataset, wrong format version) or ConfigError listing every shape key that
// differs between the checkpoint's config and `cfg`. Nothing is written.
TrainState load_checkpoint(const std::string& path, ParamStore& store, const Config& cfg, const Comm& comm);

// Path of the checkpoint LATEST names in run_dir/checkpoints, or "" if none.
std::string latest_checkpoint(const std::string& run_dir);

}  // namespace finemoe
