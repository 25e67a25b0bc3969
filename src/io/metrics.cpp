// metrics.h5 writer and reader (layout: h5layout.hpp).
//
// Rank 0 only, serial file access (sec2 driver, earliest file format so that
// a killed writer leaves no "file open for write" flag behind and any h5py /
// h5dump opens it). Every append extends its datasets by one row and flushes.
// Within a row the /step dataset is written LAST: a reader takes the shortest
// dataset of a group as the row count, so a kill between datasets never shows
// a half-written row.
#include "finemoe/metrics.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <limits>

#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/log.hpp"
#include "io/h5util.hpp"

#ifndef FINEMOE_GIT
#define FINEMOE_GIT "unknown"
#endif

namespace finemoe {

namespace hl = h5layout;

namespace {

const char* const kTrainSets[] = {hl::kTrainTokens,    hl::kTrainLoss, hl::kTrainLr, hl::kTrainGradNorm,
                                  hl::kTrainTokensPerS, hl::kTrainMfu,  hl::kTrainStep};
const char* const kEvalSets[] = {hl::kEvalTokens, hl::kEvalLoss, hl::kEvalStep};
const char* const kRoutingSets[] = {hl::kRoutingExpertLoad, hl::kRoutingDroppedFraction, hl::kRoutingEntropy,
                                    hl::kRoutingStep};

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// File access without HDF5's flock: moe-analyze and h5py may read a live
// metrics.h5 while the trainer appends (and locks fail on some cluster FSs).
h5::Handle serial_fapl() {
  h5::Handle fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_file_locking(fapl, false, true);
  return fapl;
}

bool is_int_set(const std::string& name) {
  return name == hl::kTrainStep || name == hl::kTrainTokens || name == hl::kEvalStep ||
         name == hl::kEvalTokens || name == hl::kRoutingStep || name == hl::kRoutingExpertLoad;
}

}  // namespace

struct MetricsWriter::Impl {
  std::string path;
  h5::Handle file;
  int64_t n_blocks = 0, n_experts = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("metrics " + path + ": " + what + h5::detail_suffix());
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
  }

  h5::Handle open_set(const std::string& name) {
    if (!h5::exists(file, name)) fail("dataset " + name + " missing");
    h5::Handle ds = h5::dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
    if (!ds.valid()) fail("cannot open dataset " + name);
    return ds;
  }

  // Rows of dataset `name`, 0 if empty.
  hsize_t rows(const std::string& name) {
    h5::Handle ds = open_set(name);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.empty()) fail("cannot read the extent of " + name);
    return d[0];
  }

  void set_rows(const std::string& name, hsize_t n) {
    h5::Handle ds = open_set(name);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.empty()) fail("cannot read the extent of " + name);
    d[0] = n;
    if (H5Dset_extent(ds, d.data()) < 0) fail("cannot resize " + name);
  }

  // Drops rows with step > resume_step from every dataset of a group, and any
  // half-written row (datasets of unequal length after a kill).
  void truncate_group(const char* const* sets, size_t n_sets, const char* step_set, int64_t resume_step) {
    hsize_t n = std::numeric_limits<hsize_t>::max();
    for (size_t i = 0; i < n_sets; ++i) n = std::min(n, rows(sets[i]));
    std::vector<int64_t> steps(n);
    if (n > 0) {
      h5::Handle ds = open_set(step_set);
      h5::Handle fs = h5::space(H5Dget_space(ds));
      hsize_t start = 0;
      h5::Handle ms = h5::space(H5Screate_simple(1, &n, nullptr));
      if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, nullptr, &n, nullptr) < 0 ||
          H5Dread(ds, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, steps.data()) < 0)
        fail(std::string("cannot read ") + step_set);
    }
    hsize_t keep = 0;
    while (keep < n && steps[keep] <= resume_step) ++keep;
    for (size_t i = 0; i < n_sets; ++i) set_rows(sets[i], keep);
  }

  void check_routing_shape() {
    h5::Handle ds = open_set(hl::kRoutingExpertLoad);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.size() != 3 || int64_t(d[1]) != n_blocks || int64_t(d[2]) != n_experts)
      fail(std::string("dataset ") + hl::kRoutingExpertLoad + " has a shape that does not match the config (" +
           std::to_string(n_blocks) + " blocks, " + std::to_string(n_experts) + " experts)");
  }

  // Appends one row of `row_elems` values to dataset `name`.
  void append(const char* name, hid_t mem_type, const void* row) {
    h5::Handle ds = open_set(name);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.empty()) fail(std::string("cannot read the extent of ") + name);
    std::vector<hsize_t> start(d.size(), 0), count = d;
    start[0] = d[0];
    count[0] = 1;
    d[0] += 1;
    if (H5Dset_extent(ds, d.data()) < 0) fail(std::string("cannot extend ") + name);
    h5::Handle fs = h5::space(H5Dget_space(ds));
    h5::Handle ms = h5::space(H5Screate_simple(int(count.size()), count.data(), nullptr));
    if (!fs.valid() || !ms.valid() ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
        H5Dwrite(ds, mem_type, ms, fs, H5P_DEFAULT, row) < 0)
      fail(std::string("cannot append to ") + name);
  }

  void flush() {
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail("flush failed (disk full?)");
  }
};

MetricsWriter::MetricsWriter(const std::string& path, const Config& cfg, const ModelCounts& counts,
                             double entropy_rate, int64_t resume_step)
    : impl_(std::make_unique<Impl>()) {
  h5::silence();
  Impl& m = *impl_;
  m.path = path;
  m.n_blocks = cfg.model.n_blocks;
  m.n_experts = cfg.n_experts();
  h5::Handle fapl = serial_fapl();

  bool fresh = resume_step < 0 || !file_exists(path);
  if (!fresh) {
    if (h5::is_hdf5(path)) m.file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl));
    if (!m.file.valid()) {
      // A file a kill -9 left unreadable: keep it for inspection, start anew
      // rather than refuse to resume the run.
      std::string aside = path + ".corrupt";
      std::string why = h5::detail();
      if (std::rename(path.c_str(), aside.c_str()) != 0)
        throw Error("metrics " + path + ": unreadable" + (why.empty() ? "" : " (HDF5: " + why + ")") +
                    " and cannot be moved aside to " + aside);
      log::warn("metrics %s: unreadable%s; moved to %s, starting a new file", path.c_str(),
                why.empty() ? "" : (" (HDF5: " + why + ")").c_str(), aside.c_str());
      fresh = true;
    }
  }
  if (fresh) {
    m.file = h5::file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    if (!m.file.valid()) m.fail("cannot create the file (directory missing or not writable?)");
    m.create_layout();
  } else {
    int64_t version = -1;
    if (!h5::read_attr_i64(m.file, hl::kAttrFormatVersion, version) || version != hl::kMetricsFormatVersion)
      throw DataError("metrics " + path + ": format_version " +
                      (version < 0 ? std::string("missing") : std::to_string(version)) + ", this build writes " +
                      std::to_string(hl::kMetricsFormatVersion) + "; move the file away to start a new one");
    m.check_routing_shape();
    m.truncate_group(kTrainSets, std::size(kTrainSets), hl::kTrainStep, resume_step);
    m.truncate_group(kEvalSets, std::size(kEvalSets), hl::kEvalStep, resume_step);
    m.truncate_group(kRoutingSets, std::size(kRoutingSets), hl::kRoutingStep, resume_step);
    // A final evaluation belongs to the weights of the step it was taken at,
    // which training is about to move: drop it (the new end writes its own).
    for (const char* a : {hl::kAttrFinalEvalStep, hl::kAttrFinalEvalLoss, hl::kAttrFinalEvalStderr,
                          hl::kAttrFinalEvalTokens})
      if (H5Aexists(m.file, a) > 0 && H5Adelete(m.file, a) < 0) m.fail(std::string("cannot remove attribute ") + a);
  }

  const bool dense = cfg.dense();
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
  if (!ok) m.fail("cannot write the root attributes");
  m.flush();
}

MetricsWriter::~MetricsWriter() {
  if (impl_ && impl_->file.valid()) {
    H5Fflush(impl_->file, H5F_SCOPE_GLOBAL);
    impl_->file.close();
  }
}

void MetricsWriter::append_train(const TrainRow& r) {
  Impl& m = *impl_;
  m.append(hl::kTrainTokens, H5T_NATIVE_INT64, &r.tokens);
  m.append(hl::kTrainLoss, H5T_NATIVE_DOUBLE, &r.loss);
  m.append(hl::kTrainLr, H5T_NATIVE_DOUBLE, &r.lr);
  m.append(hl::kTrainGradNorm, H5T_NATIVE_DOUBLE, &r.grad_norm);
  m.append(hl::kTrainTokensPerS, H5T_NATIVE_DOUBLE, &r.tokens_per_s);
  m.append(hl::kTrainMfu, H5T_NATIVE_DOUBLE, &r.mfu);
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
  std::vector<double> dropped(size_t(m.n_blocks)), entropy(size_t(m.n_blocks));
  for (int64_t b = 0; b < m.n_blocks; ++b) {
    const RoutingStats& s = per_block[size_t(b)];
    if (!s.tokens_per_expert.empty() && int64_t(s.tokens_per_expert.size()) != m.n_experts)
      throw Error("metrics " + m.path + ": append_routing block " + std::to_string(b) + " has " +
                  std::to_string(s.tokens_per_expert.size()) + " expert counts, the file has " +
                  std::to_string(m.n_experts));
    std::copy(s.tokens_per_expert.begin(), s.tokens_per_expert.end(), load.begin() + b * m.n_experts);
    dropped[size_t(b)] = s.unserved_fraction;
    entropy[size_t(b)] = s.router_entropy;
  }
  m.append(hl::kRoutingExpertLoad, H5T_NATIVE_INT64, load.data());
  m.append(hl::kRoutingDroppedFraction, H5T_NATIVE_DOUBLE, dropped.data());
  m.append(hl::kRoutingEntropy, H5T_NATIVE_DOUBLE, entropy.data());
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

// ---- reader -----------------------------------------------------------------

namespace {

struct Reader {
  std::string path;
  h5::Handle file;

  [[noreturn]] void fail(const std::string& what) const {
    throw DataError("metrics " + path + ": " + what + h5::detail_suffix());
  }

  // Reads the first `rows` rows of a dataset whose row has `row_elems` values.
  template <typename T>
  std::vector<T> read(const char* name, hid_t mem_type, hsize_t rows, std::vector<hsize_t>* shape = nullptr) {
    if (!h5::exists(file, name)) fail(std::string("dataset ") + name + " missing");
    h5::Handle ds = h5::dataset(H5Dopen2(file, name, H5P_DEFAULT));
    if (!ds.valid()) fail(std::string("cannot open dataset ") + name);
    std::vector<hsize_t> d = h5::dims(ds);
    if (d.empty()) fail(std::string("dataset ") + name + " is not an array");
    if (shape) *shape = d;
    rows = std::min(rows, d[0]);
    std::vector<hsize_t> start(d.size(), 0), count = d;
    count[0] = rows;
    hsize_t n = 1;
    for (hsize_t c : count) n *= c;
    std::vector<T> out(n);
    if (n == 0) return out;
    h5::Handle fs = h5::space(H5Dget_space(ds));
    h5::Handle ms = h5::space(H5Screate_simple(1, &n, nullptr));
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
        H5Dread(ds, mem_type, ms, fs, H5P_DEFAULT, out.data()) < 0)
      fail(std::string("cannot read dataset ") + name);
    return out;
  }

  // Complete rows of a group: the shortest of its datasets (see file comment).
  hsize_t group_rows(const char* const* sets, size_t n) {
    hsize_t rows = std::numeric_limits<hsize_t>::max();
    for (size_t i = 0; i < n; ++i) {
      if (!h5::exists(file, sets[i])) fail(std::string("dataset ") + sets[i] + " missing");
      h5::Handle ds = h5::dataset(H5Dopen2(file, sets[i], H5P_DEFAULT));
      std::vector<hsize_t> d = ds.valid() ? h5::dims(ds) : std::vector<hsize_t>{};
      if (d.empty()) fail(std::string("cannot open dataset ") + sets[i]);
      rows = std::min(rows, d[0]);
    }
    return rows;
  }
};

}  // namespace

RunMetrics read_metrics(const std::string& path) {
  h5::silence();
  Reader r{path, {}};
  if (!file_exists(path)) r.fail("file not found");
  if (!h5::is_hdf5(path)) r.fail("not an HDF5 file");
  h5::Handle fapl = serial_fapl();
  r.file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl));
  if (!r.file.valid()) r.fail("cannot open (truncated or corrupt HDF5 file)");

  int64_t version = -1;
  if (!h5::has_attr(r.file, hl::kAttrFormatVersion)) r.fail("attribute format_version missing");
  if (!h5::read_attr_i64(r.file, hl::kAttrFormatVersion, version)) r.fail("attribute format_version unreadable");
  if (version != hl::kMetricsFormatVersion)
    r.fail("format_version " + std::to_string(version) + ", this build reads " +
           std::to_string(hl::kMetricsFormatVersion));

  RunMetrics out;
  out.path = path;
  for (const std::string& name : h5::attr_names(r.file)) {
    if (h5::attr_is_string(r.file, name)) {
      std::string s;
      if (h5::read_attr_str(r.file, name, s)) out.str_attrs[name] = s;
    } else {
      double v;
      if (h5::read_attr_f64(r.file, name, v)) out.num_attrs[name] = v;
    }
  }

  {
    auto get = [&](const char* k, double& v) {
      auto it = out.num_attrs.find(k);
      if (it == out.num_attrs.end()) return false;
      v = it->second;
      return true;
    };
    double loss, se, tokens, step;
    if (get(hl::kAttrFinalEvalLoss, loss) && get(hl::kAttrFinalEvalStderr, se) &&
        get(hl::kAttrFinalEvalTokens, tokens) && get(hl::kAttrFinalEvalStep, step)) {
      out.has_final_eval = true;
      out.final_eval = FinalEval{int64_t(step), int64_t(tokens), loss, se};
    }
  }

  hsize_t nt = r.group_rows(kTrainSets, std::size(kTrainSets));
  auto t_step = r.read<int64_t>(hl::kTrainStep, H5T_NATIVE_INT64, nt);
  auto t_tok = r.read<int64_t>(hl::kTrainTokens, H5T_NATIVE_INT64, nt);
  auto t_loss = r.read<double>(hl::kTrainLoss, H5T_NATIVE_DOUBLE, nt);
  auto t_lr = r.read<double>(hl::kTrainLr, H5T_NATIVE_DOUBLE, nt);
  auto t_gn = r.read<double>(hl::kTrainGradNorm, H5T_NATIVE_DOUBLE, nt);
  auto t_tps = r.read<double>(hl::kTrainTokensPerS, H5T_NATIVE_DOUBLE, nt);
  auto t_mfu = r.read<double>(hl::kTrainMfu, H5T_NATIVE_DOUBLE, nt);
  out.train.resize(nt);
  for (hsize_t i = 0; i < nt; ++i)
    out.train[i] = TrainRow{t_step[i], t_tok[i], t_loss[i], t_lr[i], t_gn[i], t_tps[i], t_mfu[i]};

  hsize_t ne = r.group_rows(kEvalSets, std::size(kEvalSets));
  auto e_step = r.read<int64_t>(hl::kEvalStep, H5T_NATIVE_INT64, ne);
  auto e_tok = r.read<int64_t>(hl::kEvalTokens, H5T_NATIVE_INT64, ne);
  auto e_loss = r.read<double>(hl::kEvalLoss, H5T_NATIVE_DOUBLE, ne);
  out.eval.resize(ne);
  for (hsize_t i = 0; i < ne; ++i) out.eval[i] = EvalRow{e_step[i], e_tok[i], e_loss[i]};

  hsize_t nr = r.group_rows(kRoutingSets, std::size(kRoutingSets));
  std::vector<hsize_t> shape;
  out.routing_step = r.read<int64_t>(hl::kRoutingStep, H5T_NATIVE_INT64, nr);
  out.routing_expert_load = r.read<int64_t>(hl::kRoutingExpertLoad, H5T_NATIVE_INT64, nr, &shape);
  if (shape.size() != 3) r.fail(std::string("dataset ") + hl::kRoutingExpertLoad + " is not 3-D");
  out.routing_blocks = int64_t(shape[1]);
  out.routing_experts = int64_t(shape[2]);
  out.routing_dropped = r.read<double>(hl::kRoutingDroppedFraction, H5T_NATIVE_DOUBLE, nr);
  out.routing_entropy = r.read<double>(hl::kRoutingEntropy, H5T_NATIVE_DOUBLE, nr);
  return out;
}

}  // namespace finemoe
