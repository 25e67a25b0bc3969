// Checkpoints: runs/NAME/checkpoints/step_NNNNNNN.h5 (layout: h5layout.hpp).
//
// Full global tensors by name; expert tensors [E·G, ...] are written and read
// by each EP rank as its hyperslab with parallel HDF5 (MPI-IO), so a run saved
// on 4 ranks resumes on 2 or 1 and vice versa. Written to a temporary name,
// fsynced, renamed; LATEST is updated last. A crash at any moment leaves
// LATEST naming a complete checkpoint.
//
// Integrity (format_version 2): every tensor is a chunked dataset with HDF5's
// Fletcher32 checksum filter, and the file uses the HDF5 1.10 format, whose
// metadata (superblock, object headers with the /state attributes, chunk
// index) carries checksums too. Every HDF5 reader (h5py, h5dump) verifies
// them; load_checkpoint refuses a mismatch naming the file and the tensor.
// format_version 1 files (no checksums) still load, with one warning.
// format_version 4 added the resolved GEMM precision and fp32 engine
// (TrainState), which a resumed run with `auto` reuses.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "finemoe/comm.hpp"
#include "finemoe/config.hpp"
#include "finemoe/params.hpp"

namespace finemoe {

struct TrainState {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // global token cursor: step · train.batch_size · model.seq_len
  uint64_t seed = 0;   // train.seed (initialisation and batch order)
  // What the run resolved train.precision and train.fp32_engine to
  // (backend::precision_name / fp32_engine_name), so that a resumed `auto`
  // run computes exactly as before. Loaded from a checkpoint older than
  // format_version 4: fp32_engine "openblas" (the only engine moe-train used
  // then) and precision the stored config's train.precision, or "" (unknown)
  // when that was auto.
  std::string precision = "fp32";
  std::string fp32_engine = "openblas";
};

// Which checkpoints in run_dir/checkpoints a run may prune or replace: the
// ones it wrote and, when it resumed from a checkpoint in that same
// directory, those up to that step (its own history). Any other checkpoint
// (a newer one it skipped because it failed verification, one of another run
// started with run.resume=never) is never deleted, and one it would overwrite
// is first renamed to step_N.h5.kept (then .kept.2, ...).
struct CheckpointOwnership {
  int64_t history_up_to = -1;  // -1: started fresh, owns no earlier checkpoint
  std::set<int64_t> written;   // filled by save_checkpoint
  bool owns(int64_t step) const { return step <= history_up_to || written.count(step) > 0; }
};

// Collective over all ranks. Returns the checkpoint's path. Prunes, among the
// checkpoints `owned` names, all but the newest cfg.train.checkpoint_keep.
std::string save_checkpoint(const std::string& run_dir, const ParamStore& store, const TrainState& state,
                            const Config& cfg, const Comm& comm, CheckpointOwnership& owned);

// Collective. Fills params and AdamW moments of `store` (this rank's part) and
// returns the state. Throws DataError naming the file (unreadable/truncated,
// missing dataset, wrong format version, checksum mismatch naming the tensor,
// a /state value out of range or inconsistent with the stored config) or
// ConfigError listing every shape key that differs between the checkpoint's
// config and `cfg`. Nothing is written. Errors found before the tensors are
// read leave `store` untouched; a checksum mismatch found while reading may
// leave it partly overwritten (the caller exits or loads another checkpoint).
TrainState load_checkpoint(const std::string& path, ParamStore& store, const Config& cfg, const Comm& comm);

// Path of the checkpoint LATEST names in run_dir/checkpoints, or "" if LATEST
// is missing, empty or does not hold a checkpoint file name.
std::string latest_checkpoint(const std::string& run_dir);

// Complete checkpoints (step_N.h5) in run_dir/checkpoints: step -> path.
std::map<int64_t, std::string> checkpoint_files(const std::string& run_dir);

// run.resume=auto. Collective. Returns the path loaded into `store`/`state`,
// or "" (nothing loaded) when run_dir/checkpoints holds no checkpoint.
//  - LATEST names an existing file: that one, strictly (a checkpoint that
//    fails verification is a DataError, never a silent fallback).
//  - LATEST missing, empty, unreadable or naming a missing file while step_*.h5
//    files exist: the newest of them that verifies, with a log line saying so
//    and why (and why each newer one was skipped); DataError if none verifies.
std::string resume_latest(const std::string& run_dir, ParamStore& store, TrainState& state, const Config& cfg,
                          const Comm& comm);

}  // namespace finemoe
