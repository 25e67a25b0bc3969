// Internals shared by the metrics.h5 writer (metrics.cpp), the in-process
// reader (metrics_reader.cpp) and the reader that runs in a child process
// (metrics_isolated.cpp). Names come from h5layout.hpp.
#pragma once
#include <cstdint>
#include <iterator>
#include <string>

#include "finemoe/h5layout.hpp"
#include "finemoe/metrics.hpp"
#include "io/h5util.hpp"

namespace finemoe::metrics_detail {

namespace hl = h5layout;

// Datasets of each group; the /step dataset LAST (it commits a row).
inline const char* const kTrainSets[] = {hl::kTrainTokens,      hl::kTrainLoss, hl::kTrainLr, hl::kTrainGradNorm,
                                         hl::kTrainTokensPerS, hl::kTrainMfu,  hl::kTrainAuxLoss,
                                         hl::kTrainStep};
inline const char* const kEvalSets[] = {hl::kEvalTokens, hl::kEvalLoss, hl::kEvalStep};
inline const char* const kRoutingSets[] = {hl::kRoutingExpertLoad, hl::kRoutingDroppedFraction, hl::kRoutingEntropy,
                                           hl::kRoutingBalanceLoss, hl::kRoutingZLoss, hl::kRoutingStep};

// Datasets that format_version 1 files lack (the readers fill them with NaN).
inline bool added_in_v2(const char* name) {
  const std::string n = name;
  return n == hl::kTrainAuxLoss || n == hl::kRoutingBalanceLoss || n == hl::kRoutingZLoss;
}
inline bool readable_version(int64_t v) {
  return v >= hl::kMetricsOldestReadableVersion && v <= hl::kMetricsFormatVersion;
}

// File access without HDF5's flock: moe-analyze and h5py may read a live
// metrics.h5 while the trainer appends (and locks fail on some cluster FSs).
// The run directory's own lock (run_lock.hpp) keeps two trainers apart.
h5::Handle serial_fapl();

// One open metrics.h5 whose parts are read one at a time, so that the
// isolated reader can hand each part to its parent as soon as it is read and a
// crash in a later part loses only that part. Every failure is a DataError
// "metrics PATH: what (HDF5: detail)"; never an HDF5 error stack.
class PartReader {
 public:
  // Checks the path is a readable regular file with the HDF5 signature (so a
  // FIFO never blocks), then opens it read-only.
  explicit PartReader(const std::string& path);
  // format_version attribute; throws if missing or unreadable. The read_*
  // calls then expect that version's datasets (none read it: the current one).
  int64_t format_version();
  void read_train(RunMetrics& out);
  void read_eval(RunMetrics& out);
  void read_routing(RunMetrics& out);
  void read_attrs(RunMetrics& out);  // every root attribute (strings: config, status, ...)

  [[noreturn]] void fail(const std::string& what) const;

 private:
  template <typename T>
  std::vector<T> read(const char* name, hid_t mem_type, hsize_t rows, std::vector<hsize_t>* shape = nullptr);
  hsize_t group_rows(const char* const* sets, size_t n);

  std::string path_;
  int64_t file_size_ = 0;
  int64_t version_ = hl::kMetricsFormatVersion;
  h5::Handle file_;
};

// Fills has_final_eval / final_eval from the root attributes in num_attrs
// (all four final_eval_* must be there). Both readers (in-process and the
// isolated child's) call it, so the fields mean the same either way.
void derive_final_eval(RunMetrics& m);

}  // namespace finemoe::metrics_detail
