// metrics.h5 writer (layout: h5layout.hpp; reader: metrics_reader.cpp).
//
// Rank 0 only, serial file access (sec2 driver, earliest file format so that
// a killed writer leaves no "file open for write" flag behind and any h5py /
// h5dump opens it). Every append extends its datasets by one row and flushes.
// Within a row the /step dataset is written LAST: a reader takes the shortest
// dataset of a group as the row count, so a kill between datasets never shows
// a half-written row.
//
// Every HDF5 write and flush is checked: a failure (disk full, I/O error) is
// an Error naming the file, so the trainer stops (exit 1) instead of logging
// rows that never reach the disk.
//
// Resume: the old file is first read in a child process (salvage_metrics), so
// a file damaged enough to crash the HDF5 library never gets opened here.
//  - healthy: opened read-write, rows after the checkpoint dropped in place;
//  - truly corrupt: its readable rows up to the checkpoint are copied into a
//    new file, the old one is kept as metrics.h5.corrupt[-N];
//  - not ours to change (permission denied, not a regular file, another
//    format_version, another model shape): an error, the file untouched.
#include "finemoe/metrics.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>

#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/log.hpp"
#include "io/file_check.hpp"
#include "io/h5util.hpp"
#include "io/metrics_internal.hpp"

#ifndef FINEMOE_GIT
#define FINEMOE_GIT "unknown"
#endif

namespace finemoe {

namespace hl = h5layout;
using namespace metrics_detail;

namespace {

bool is_int_set(const std::string& name) {
  return name == hl::kTrainStep || name == hl::kTrainTokens || name == hl::kEvalStep ||
         name == hl::kEvalTokens || name == hl::kRoutingStep || name == hl::kRoutingExpertLoad;
}

bool path_exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

// The writer's file access: serial_fapl() without a raw-data chunk cache.
// Why: with the cache, an append only changes the cached chunk, and H5Fflush
// (libhdf5 1.10) reported success while the chunk never reached a full disk:
// 2000 appended rows read back with the last 976 all zeros, and the first
// error came at the final close. Without it every H5Dwrite writes its chunk
// to the file at once, so ENOSPC fails that append (measured: see
// io.MetricsFaults.DiskFullStopsTheWriterAndKeepsEveryEarlierRow). The cost
// is a chunk read-modify-write per append, once per logged step.
h5::Handle writer_fapl() {
  h5::Handle fapl = serial_fapl();
  H5Pset_cache(fapl, 0, 0, 0, 1.0);
  return fapl;
}

// metrics.h5.corrupt, or metrics.h5.corrupt-2, -3, ... if taken: an older
// damaged file is evidence too.
std::string free_aside_name(const std::string& path) {
  std::string aside = path + ".corrupt";
  for (int k = 2; path_exists(aside); ++k) aside = path + ".corrupt-" + std::to_string(k);
  return aside;
}

// Rows of a salvaged group with step <= resume_step: a prefix, as in truncation.
template <typename Row>
size_t keep_prefix(const std::vector<Row>& rows, int64_t resume_step) {
  size_t keep = 0;
  while (keep < rows.size() && rows[keep].step <= resume_step) ++keep;
  return keep;
}

}  // namespace

struct MetricsWriter::Impl {
  std::string path;
  h5::Handle file;
  int64_t n_blocks = 0, n_experts = 0;
  bool broken = false;  // a write or flush failed: the close must not write (see close_file)

  [[noreturn]] void fail(const std::string& what) {
    broken = true;
    throw Error("metrics " + path + ": " + what + os_detail());
  }

  // HDF5's innermost message; for a failed system call (sec2: "file write
  // failed: time = ..., buf = 0x..., error message = 'No space left on
  // device', ...") just the call and the OS reason.
  static std::string os_detail() {
    const std::string d = h5::detail();
    const std::string key = "error message = '";
    const size_t at = d.find(key), end = at == std::string::npos ? at : d.find('\'', at + key.size());
    if (end != std::string::npos)
      return " (HDF5: " + d.substr(0, d.find(':')) + ": " + d.substr(at + key.size(), end - at - key.size()) + ")";
    return d.empty() ? std::string() : " (HDF5: " + d + ")";
  }

  void create_set(const std::string& name, std::vector<hsize_t> row_shape) {
    std::vector<hsize_t> d{0}, maxd{H5S_UNLIMITED}, chunk{0};
    hsize_t row_elems = 1;
    for (hsize_t r : row_shape) {
      d.push_back(r);
      maxd.push_back(r);
      chunk.push_back(r);
      row_elems *= r;
    }
    // ~64k elements per chunk, at most 1024 rows: few chunks, cheap appends.
    chunk[0] = std::clamp<hsize_t>(65536 / std::max<hsize_t>(row_elems, 1), 1, 1024);
    h5::Handle sp = h5::space(H5Screate_simple(int(d.size()), d.data(), maxd.data()));
    h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
    if (!sp.valid() || !dcpl.valid() || H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()) < 0)
      fail("cannot set up dataset " + name);
    hid_t ftype = is_int_set(name) ? H5T_STD_I64LE : H5T_IEEE_F64LE;
    h5::Handle ds = h5::dataset(H5Dcreate2(file, name.c_str(), ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    if (!ds.valid()) fail("cannot create dataset " + name);
  }

  void create_layout() {
    for (const char* g : {hl::kTrainGroup, hl::kEvalGroup, hl::kRoutingGroup}) {
      h5::Handle grp = h5::group(H5Gcreate2(file, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      if (!grp.valid()) fail(std::string("cannot create group ") + g);
    }
    for (const char* s : kTrainSets) create_set(s, {});
    for (const char* s : kEvalSets) create_set(s, {});
    create_set(hl::kRoutingStep, {});
    create_set(hl::kRoutingExpertLoad, {hsize_t(n_blocks), hsize_t(n_experts)});
    create_set(hl::kRoutingDroppedFraction, {hsize_t(n_blocks)});
    create_set(hl::kRoutingEntropy, {hsize_t(n_blocks)});
    create_set(hl::kRoutingBalanceLoss, {hsize_t(n_blocks)});
    create_set(hl::kRoutingZLoss, {hsize_t(n_blocks)});
  }

  void create(const std::string& at) {
    h5::Handle fapl = writer_fapl();
    file = h5::file(H5Fcreate(at.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    if (!file.valid()) {
      path = at;
      fail("cannot create the file (directory missing or not writable?)");
    }
    create_layout();
  }

  h5::Handle open_set(const std::string& name) {
    if (!h5::exists(file, name)) fail("dataset " + name + " missing");
    h5::Handle ds = h5::dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
    if (!ds.valid()) fail("cannot open dataset " + name);
    return ds;
  }

  // Appends `n` rows to dataset `name` (row shape from the dataset).
  void append(const char* name, hid_t mem_type, const void* data, hsize_t n = 1) {
    if (n == 0) return;
    h5::Handle ds = open_set(name);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.empty()) fail(std::string("cannot read the extent of ") + name);
    std::vector<hsize_t> start(d.size(), 0), count = d;
    start[0] = d[0];
    count[0] = n;
    d[0] += n;
    if (H5Dset_extent(ds, d.data()) < 0) fail(std::string("cannot extend ") + name);
    h5::Handle fs = h5::space(H5Dget_space(ds));
    h5::Handle ms = h5::space(H5Screate_simple(int(count.size()), count.data(), nullptr));
    if (!fs.valid() || !ms.valid() ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
        H5Dwrite(ds, mem_type, ms, fs, H5P_DEFAULT, data) < 0)
      fail(std::string("cannot append to ") + name);
  }

  void flush() {
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail("flush failed (disk full?)");
  }

  // After a failed write libhdf5 1.10 cannot close the file: its close
  // retries the failed metadata flush, fails again, and leaves a dangling id
  // on which MPI_Finalize (or the library's atexit) segfaults. So a broken
  // file's descriptor is first pointed at an anonymous in-memory file
  // (memfd; /dev/null fails the close's ftruncate): the close's writes go
  // there, the id is released, and the disk keeps what the appends before the
  // failure wrote (which a resume salvages).
  bool close_file() {
    if (!file.valid()) return true;
    if (!broken && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) broken = true;
    if (broken) {
      void* handle = nullptr;
      if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) >= 0 && handle) {
        const int sink = ::memfd_create("finemoe-metrics-discard", MFD_CLOEXEC);
        if (sink >= 0) {
          ::dup2(sink, *static_cast<int*>(handle));
          ::close(sink);
        }
      }
    }
    const bool closed = file.close();
    h5::detail();  // clear the stack
    return closed && !broken;
  }

  // Everything of the salvaged file that may be kept, into a new file at
  // `at`. Returns the rows written per group.
  void write_salvaged(const MetricsSalvage& s, int64_t resume_step, size_t counts[3]) {
    const RunMetrics& old = s.metrics;
    const size_t nt = s.train_ok ? keep_prefix(old.train, resume_step) : 0;
    const size_t ne = s.eval_ok ? keep_prefix(old.eval, resume_step) : 0;
    size_t nr = 0;
    if (s.routing_ok && old.routing_blocks == n_blocks && old.routing_experts == n_experts)
      while (nr < old.routing_step.size() && old.routing_step[nr] <= resume_step) ++nr;
    std::vector<int64_t> i64(std::max(nt, ne));
    std::vector<double> f64(std::max(nt, ne));
    auto put = [&](const char* name, auto&& member, const auto& rows, size_t n) {
      using V = std::decay_t<decltype(rows[0].*member)>;
      if constexpr (std::is_same_v<V, int64_t>) {
        for (size_t i = 0; i < n; ++i) i64[i] = rows[i].*member;
        append(name, H5T_NATIVE_INT64, i64.data(), n);
      } else {
        for (size_t i = 0; i < n; ++i) f64[i] = rows[i].*member;
        append(name, H5T_NATIVE_DOUBLE, f64.data(), n);
      }
    };
    put(hl::kTrainTokens, &TrainRow::tokens, old.train, nt);
    put(hl::kTrainLoss, &TrainRow::loss, old.train, nt);
    put(hl::kTrainLr, &TrainRow::lr, old.train, nt);
    put(hl::kTrainGradNorm, &TrainRow::grad_norm, old.train, nt);
    put(hl::kTrainTokensPerS, &TrainRow::tokens_per_s, old.train, nt);
    put(hl::kTrainMfu, &TrainRow::mfu, old.train, nt);
    put(hl::kTrainAuxLoss, &TrainRow::aux_loss, old.train, nt);  // NaN for a version-1 file's rows
    put(hl::kTrainStep, &TrainRow::step, old.train, nt);
    put(hl::kEvalTokens, &EvalRow::tokens, old.eval, ne);
    put(hl::kEvalLoss, &EvalRow::loss, old.eval, ne);
    put(hl::kEvalStep, &EvalRow::step, old.eval, ne);
    append(hl::kRoutingExpertLoad, H5T_NATIVE_INT64, old.routing_expert_load.data(), nr);
    append(hl::kRoutingDroppedFraction, H5T_NATIVE_DOUBLE, old.routing_dropped.data(), nr);
    append(hl::kRoutingEntropy, H5T_NATIVE_DOUBLE, old.routing_entropy.data(), nr);
    append(hl::kRoutingBalanceLoss, H5T_NATIVE_DOUBLE, old.routing_balance.data(), nr);
    append(hl::kRoutingZLoss, H5T_NATIVE_DOUBLE, old.routing_z.data(), nr);
    append(hl::kRoutingStep, H5T_NATIVE_INT64, old.routing_step.data(), nr);
    counts[0] = nt, counts[1] = ne, counts[2] = nr;
  }

  void resume(int64_t resume_step, int64_t file_size);
  // Builds a new file from the salvaged rows up to resume_step and renames it
  // over the old one; a damaged old file is kept aside (.corrupt) first.
  void recover(const MetricsSalvage& s, int64_t resume_step, bool damaged);
};

void MetricsWriter::Impl::resume(int64_t resume_step, int64_t file_size) {
  // A read of a healthy file must never time out (that would be taken for
  // damage): a minute plus a second per 10 MB, for slow shared file systems.
  const double timeout_s = 60.0 + double(file_size) / 10e6;
  // First a health check that brings back steps only; the full salvage (a
  // second read) only for a damaged file.
  MetricsSalvage s = salvage_metrics(path, timeout_s, /*routing_values=*/false);
  // Another layout, another model: not damage, and not ours to replace. An
  // older layout this build reads is carried over into a new-layout file.
  if (s.format_version >= 0 && !readable_version(s.format_version))
    throw DataError("metrics " + path + ": format_version " + std::to_string(s.format_version) +
                    ", this build writes " + std::to_string(hl::kMetricsFormatVersion) + " and reads " +
                    std::to_string(hl::kMetricsOldestReadableVersion) + " to " +
                    std::to_string(hl::kMetricsFormatVersion) + "; move the file away to start a new one");
  if (s.format_version >= 0 && s.format_version != hl::kMetricsFormatVersion)
    log::info("metrics %s: format_version %lld carried over into format_version %d (columns it lacks are NaN in "
              "its rows)",
              path.c_str(), (long long)s.format_version, hl::kMetricsFormatVersion);
  if (!s.clean()) {
    MetricsSalvage full = salvage_metrics(path, timeout_s, true);
    if (full.clean()) full.problem = s.problem;  // it failed once: damaged all the same
    return recover(full, resume_step, true);
  }
  const RunMetrics& old = s.metrics;
  if (old.routing_blocks != n_blocks || old.routing_experts != n_experts)
    throw DataError("metrics " + path + ": dataset " + hl::kRoutingExpertLoad + " has " +
                    std::to_string(old.routing_blocks) + " blocks x " + std::to_string(old.routing_experts) +
                    " experts, the config " + std::to_string(n_blocks) + " x " + std::to_string(n_experts) +
                    " (another model in this run directory?); move the file away to start a new one");
  // The old file is never opened in this process: one that reads cleanly in
  // the isolated reader can still crash HDF5 when written in place (seen with
  // fuzzed files, in H5T conversions of a damaged attribute). Instead a new
  // file is built from a full isolated read (rows up to the checkpoint; no
  // final evaluation, which belongs to weights training is about to move)
  // and renamed over the old one.
  MetricsSalvage full = salvage_metrics(path, timeout_s, true);
  if (!full.clean()) {
    if (full.problem.empty()) full.problem = "metrics " + path + ": a second read failed";
    return recover(full, resume_step, true);
  }
  recover(full, resume_step, false);
}

void MetricsWriter::Impl::recover(const MetricsSalvage& s, int64_t resume_step, bool damaged) {
  if (damaged) log::warn("%s", s.problem.c_str());
  // The new file is built under a temporary name and renamed over the old one
  // only when complete: a kill during recovery leaves the old file in place.
  const std::string tmp = path + ".recovering";
  create(tmp);
  size_t rows[3] = {0, 0, 0};
  try {
    write_salvaged(s, resume_step, rows);
    flush();
  } catch (...) {
    close_file();
    ::unlink(tmp.c_str());
    throw;
  }
  const std::string aside = damaged ? free_aside_name(path) : "";
  // A hard link keeps metrics.h5 in place until the rename replaces it.
  if (damaged && ::link(path.c_str(), aside.c_str()) != 0 && std::rename(path.c_str(), aside.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    close_file();
    ::unlink(tmp.c_str());
    throw Error("metrics " + path + ": corrupt, and cannot be moved aside to " + aside + ": " + why);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    close_file();
    throw Error("metrics " + path + ": cannot rename the recovered file " + tmp + " into place: " + why);
  }
  if (!damaged) return;
  log::warn("metrics %s: corrupt file moved to %s; recovered %zu train, %zu eval and %zu routing rows up to step "
            "%lld into a new %s%s",
            path.c_str(), aside.c_str(), rows[0], rows[1], rows[2], (long long)resume_step, path.c_str(),
            s.routing_ok && rows[2] == 0 && !s.metrics.routing_step.empty() ? " (routing rows of another shape dropped)"
                                                                            : "");
}

MetricsWriter::MetricsWriter(const std::string& path, const Config& cfg, const ModelCounts& counts,
                             double entropy_rate, int64_t resume_step)
    : impl_(std::make_unique<Impl>()) {
  h5::silence();
  Impl& m = *impl_;
  m.path = path;
  m.n_blocks = cfg.model.n_blocks;
  m.n_experts = cfg.n_experts();

  // What the OS says comes first: permission problems and FIFOs are not
  // corruption, and the file is left exactly as it is.
  const io::FileCheck fc = io::check_regular_file(path, true);
  if (fc.problem == io::FileProblem::not_regular)
    throw DataError("metrics " + path + ": " + fc.reason + "; move it away");
  if (fc.problem == io::FileProblem::no_access)
    throw Error("metrics " + path + ": " + fc.reason + " (file left untouched)");
  const bool dense = cfg.dense();
  auto write_root_attrs = [&m, &cfg, &counts, entropy_rate, dense] {
  bool ok = h5::write_attr_i32(m.file, hl::kAttrFormatVersion, hl::kMetricsFormatVersion) &&
            h5::write_attr_str(m.file, hl::kAttrCodeVersion, FINEMOE_GIT) &&
            h5::write_attr_str(m.file, hl::kAttrStatus, "running") &&
            h5::write_attr_f64(m.file, hl::kAttrN, counts.N) &&
            h5::write_attr_f64(m.file, hl::kAttrNActive, counts.N_active) &&
            h5::write_attr_f64(m.file, hl::kAttrFlopsPerToken, counts.flops_per_token) &&
            h5::write_attr_f64(m.file, hl::kAttrModelFlopsPerToken, counts.model_flops_per_token) &&
            h5::write_attr_i64(m.file, hl::kAttrE, dense ? 1 : cfg.moe.experts) &&
            h5::write_attr_i64(m.file, hl::kAttrG, dense ? 1 : cfg.moe.granularity) &&
            h5::write_attr_i64(m.file, hl::kAttrDModel, cfg.model.d_model) &&
            h5::write_attr_i64(m.file, hl::kAttrNBlocks, cfg.model.n_blocks) &&
            h5::write_attr_i32(m.file, hl::kAttrDense, dense ? 1 : 0) &&
            h5::write_attr_u64(m.file, hl::kAttrSeed, cfg.train.seed) &&
            h5::write_attr_f64(m.file, hl::kAttrEntropyFloor, entropy_rate) &&
            h5::write_attr_i32(m.file, hl::kAttrCooldown, 0) &&
            h5::write_attr_str(m.file, hl::kAttrConfigIni, cfg.to_ini());
  for (const auto& [key, value] : cfg.to_pairs())
    ok = ok && h5::write_attr_str(m.file, std::string(hl::kAttrConfigPrefix) + key, value);
  return ok;
  };
  if (resume_step < 0 || fc.problem == io::FileProblem::missing) {
    m.create(path);
  } else {
    m.resume(resume_step, fc.size);  // a new file either way (see resume())
  }
  if (!write_root_attrs()) m.fail("cannot write the root attributes");
  m.flush();
}

MetricsWriter::~MetricsWriter() {
  if (impl_ && !impl_->close_file())
    log::warn("metrics %s: the final flush or close failed (disk full?); rows after the last successful append "
              "may be missing",
              impl_->path.c_str());
}

void MetricsWriter::close() {
  if (!impl_->close_file()) impl_->fail("the final flush or close failed (disk full?)");
}

void MetricsWriter::append_train(const TrainRow& r) {
  Impl& m = *impl_;
  m.append(hl::kTrainTokens, H5T_NATIVE_INT64, &r.tokens);
  m.append(hl::kTrainLoss, H5T_NATIVE_DOUBLE, &r.loss);
  m.append(hl::kTrainLr, H5T_NATIVE_DOUBLE, &r.lr);
  m.append(hl::kTrainGradNorm, H5T_NATIVE_DOUBLE, &r.grad_norm);
  m.append(hl::kTrainTokensPerS, H5T_NATIVE_DOUBLE, &r.tokens_per_s);
  m.append(hl::kTrainMfu, H5T_NATIVE_DOUBLE, &r.mfu);
  m.append(hl::kTrainAuxLoss, H5T_NATIVE_DOUBLE, &r.aux_loss);
  m.append(hl::kTrainStep, H5T_NATIVE_INT64, &r.step);  // last: commits the row
  m.flush();
}

void MetricsWriter::append_eval(const EvalRow& r) {
  Impl& m = *impl_;
  m.append(hl::kEvalTokens, H5T_NATIVE_INT64, &r.tokens);
  m.append(hl::kEvalLoss, H5T_NATIVE_DOUBLE, &r.loss);
  m.append(hl::kEvalStep, H5T_NATIVE_INT64, &r.step);
  m.flush();
}

void MetricsWriter::set_final_eval(const FinalEval& fe) {
  Impl& m = *impl_;
  // Step last: a reader takes the set only when all four are there.
  if (!h5::write_attr_f64(m.file, hl::kAttrFinalEvalLoss, fe.loss) ||
      !h5::write_attr_f64(m.file, hl::kAttrFinalEvalStderr, fe.stderr_loss) ||
      !h5::write_attr_i64(m.file, hl::kAttrFinalEvalTokens, fe.tokens) ||
      !h5::write_attr_i64(m.file, hl::kAttrFinalEvalStep, fe.step))
    m.fail("cannot write the final_eval_* attributes");
  m.flush();
}

void MetricsWriter::append_routing(int64_t step, const std::vector<RoutingStats>& per_block) {
  Impl& m = *impl_;
  if (int64_t(per_block.size()) != m.n_blocks)
    throw Error("metrics " + m.path + ": append_routing got " + std::to_string(per_block.size()) +
                " blocks, the file has " + std::to_string(m.n_blocks));
  std::vector<int64_t> load(size_t(m.n_blocks * m.n_experts), 0);
  std::vector<double> dropped(size_t(m.n_blocks)), entropy(size_t(m.n_blocks)), balance(size_t(m.n_blocks)),
      z(size_t(m.n_blocks));
  for (int64_t b = 0; b < m.n_blocks; ++b) {
    const RoutingStats& s = per_block[size_t(b)];
    if (!s.tokens_per_expert.empty() && int64_t(s.tokens_per_expert.size()) != m.n_experts)
      throw Error("metrics " + m.path + ": append_routing block " + std::to_string(b) + " has " +
                  std::to_string(s.tokens_per_expert.size()) + " expert counts, the file has " +
                  std::to_string(m.n_experts));
    std::copy(s.tokens_per_expert.begin(), s.tokens_per_expert.end(), load.begin() + b * m.n_experts);
    dropped[size_t(b)] = s.unserved_fraction;
    entropy[size_t(b)] = s.router_entropy;
    balance[size_t(b)] = s.balance_loss;
    z[size_t(b)] = s.z_loss;
  }
  m.append(hl::kRoutingExpertLoad, H5T_NATIVE_INT64, load.data());
  m.append(hl::kRoutingDroppedFraction, H5T_NATIVE_DOUBLE, dropped.data());
  m.append(hl::kRoutingEntropy, H5T_NATIVE_DOUBLE, entropy.data());
  m.append(hl::kRoutingBalanceLoss, H5T_NATIVE_DOUBLE, balance.data());
  m.append(hl::kRoutingZLoss, H5T_NATIVE_DOUBLE, z.data());
  m.append(hl::kRoutingStep, H5T_NATIVE_INT64, &step);
  m.flush();
}

void MetricsWriter::set_status(const std::string& status) {
  if (status != "running" && status != "completed" && status != "failed" && status != "preempted")
    throw Error("metrics " + impl_->path + ": invalid status '" + status +
                "' (running|completed|failed|preempted)");
  set_attr(hl::kAttrStatus, status);
}

void MetricsWriter::set_attr(const std::string& name, double value) {
  if (!h5::write_attr_f64(impl_->file, name, value)) impl_->fail("cannot write attribute " + name);
  impl_->flush();
}

void MetricsWriter::set_attr(const std::string& name, const std::string& value) {
  if (!h5::write_attr_str(impl_->file, name, value)) impl_->fail("cannot write attribute " + name);
  impl_->flush();
}

void MetricsWriter::flush() { impl_->flush(); }

}  // namespace finemoe
