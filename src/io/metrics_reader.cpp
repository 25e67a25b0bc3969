// metrics.h5 reader (layout: h5layout.hpp), part by part (metrics_internal.hpp).
//
// Defensive about everything a damaged file can claim: the path must be a
// regular file (a FIFO would block HDF5's open), every dataset must exist with
// the rank the layout says, and no dataset may claim more values than the file
// could hold (a flipped byte in a dimension must not become a 2^60-element
// allocation). A file that still makes the HDF5 library itself crash is the
// isolated reader's job (metrics_isolated.cpp).
#include <algorithm>
#include <limits>

#include "finemoe/error.hpp"
#include "io/file_check.hpp"
#include "io/metrics_internal.hpp"

namespace finemoe {
namespace metrics_detail {

h5::Handle serial_fapl() {
  h5::Handle fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_file_locking(fapl, false, true);
  return fapl;
}

void PartReader::fail(const std::string& what) const {
  throw DataError("metrics " + path_ + ": " + what + h5::detail_suffix());
}

PartReader::PartReader(const std::string& path) : path_(path) {
  h5::silence();
  const io::FileCheck fc = io::check_regular_file(path, false);
  if (fc.problem != io::FileProblem::none) fail(fc.reason);
  file_size_ = fc.size;
  if (!h5::is_hdf5(path)) fail("not an HDF5 file");
  h5::Handle fapl = serial_fapl();
  file_ = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl));
  if (!file_.valid()) fail("cannot open (truncated or corrupt HDF5 file)");
}

int64_t PartReader::format_version() {
  int64_t version = -1;
  if (!h5::has_attr(file_, hl::kAttrFormatVersion)) fail("attribute format_version missing");
  if (!h5::read_attr_i64(file_, hl::kAttrFormatVersion, version)) fail("attribute format_version unreadable");
  version_ = version;
  return version;
}

// Reads the first `rows` rows of a dataset.
template <typename T>
std::vector<T> PartReader::read(const char* name, hid_t mem_type, hsize_t rows, std::vector<hsize_t>* shape) {
  if (!h5::exists(file_, name)) fail(std::string("dataset ") + name + " missing");
  h5::Handle ds = h5::dataset(H5Dopen2(file_, name, H5P_DEFAULT));
  if (!ds.valid()) fail(std::string("cannot open dataset ") + name);
  std::vector<hsize_t> d = h5::dims(ds);
  if (d.empty()) fail(std::string("dataset ") + name + " is not an array");
  if (shape) *shape = d;
  rows = std::min(rows, d[0]);
  std::vector<hsize_t> start(d.size(), 0), count = d;
  count[0] = rows;
  // In double: a corrupt extent must not overflow the product.
  double values = 1;
  for (hsize_t c : count) values *= double(c);
  if (values * double(sizeof(T)) > double(file_size_) + double(1 << 20))
    fail(std::string("dataset ") + name + " claims " + std::to_string(values) + " values, more than the " +
         std::to_string(file_size_) + "-byte file can hold");
  const hsize_t n = hsize_t(values);
  std::vector<T> out(n);
  if (n == 0) return out;
  h5::Handle fs = h5::space(H5Dget_space(ds));
  h5::Handle ms = h5::space(H5Screate_simple(1, &n, nullptr));
  if (!fs.valid() || !ms.valid() ||
      H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
      H5Dread(ds, mem_type, ms, fs, H5P_DEFAULT, out.data()) < 0)
    fail(std::string("cannot read dataset ") + name);
  return out;
}

// Complete rows of a group: the shortest of its datasets (a kill between two
// datasets of a row leaves some one row longer; see metrics.cpp).
hsize_t PartReader::group_rows(const char* const* sets, size_t n) {
  hsize_t rows = std::numeric_limits<hsize_t>::max();
  for (size_t i = 0; i < n; ++i) {
    if (version_ < 2 && added_in_v2(sets[i])) continue;
    if (!h5::exists(file_, sets[i])) fail(std::string("dataset ") + sets[i] + " missing");
    h5::Handle ds = h5::dataset(H5Dopen2(file_, sets[i], H5P_DEFAULT));
    std::vector<hsize_t> d = ds.valid() ? h5::dims(ds) : std::vector<hsize_t>{};
    if (d.empty()) fail(std::string("cannot open dataset ") + sets[i]);
    rows = std::min(rows, d[0]);
  }
  return rows;
}

void PartReader::read_train(RunMetrics& out) {
  const hsize_t nt = group_rows(kTrainSets, std::size(kTrainSets));
  auto t_step = read<int64_t>(hl::kTrainStep, H5T_NATIVE_INT64, nt);
  auto t_tok = read<int64_t>(hl::kTrainTokens, H5T_NATIVE_INT64, nt);
  auto t_loss = read<double>(hl::kTrainLoss, H5T_NATIVE_DOUBLE, nt);
  auto t_lr = read<double>(hl::kTrainLr, H5T_NATIVE_DOUBLE, nt);
  auto t_gn = read<double>(hl::kTrainGradNorm, H5T_NATIVE_DOUBLE, nt);
  auto t_tps = read<double>(hl::kTrainTokensPerS, H5T_NATIVE_DOUBLE, nt);
  auto t_mfu = read<double>(hl::kTrainMfu, H5T_NATIVE_DOUBLE, nt);
  auto t_aux = version_ >= 2 ? read<double>(hl::kTrainAuxLoss, H5T_NATIVE_DOUBLE, nt)
                             : std::vector<double>(nt, std::numeric_limits<double>::quiet_NaN());
  for (const auto* v : {&t_loss, &t_lr, &t_gn, &t_tps, &t_mfu, &t_aux})
    if (v->size() != nt) fail("the /train datasets are not 1-D");
  if (t_step.size() != nt || t_tok.size() != nt) fail("the /train datasets are not 1-D");
  out.train.resize(nt);
  for (hsize_t i = 0; i < nt; ++i)
    out.train[i] = TrainRow{t_step[i], t_tok[i], t_loss[i], t_lr[i], t_gn[i], t_tps[i], t_mfu[i], t_aux[i]};
}

void PartReader::read_eval(RunMetrics& out) {
  const hsize_t ne = group_rows(kEvalSets, std::size(kEvalSets));
  auto e_step = read<int64_t>(hl::kEvalStep, H5T_NATIVE_INT64, ne);
  auto e_tok = read<int64_t>(hl::kEvalTokens, H5T_NATIVE_INT64, ne);
  auto e_loss = read<double>(hl::kEvalLoss, H5T_NATIVE_DOUBLE, ne);
  if (e_step.size() != ne || e_tok.size() != ne || e_loss.size() != ne) fail("the /eval datasets are not 1-D");
  out.eval.resize(ne);
  for (hsize_t i = 0; i < ne; ++i) out.eval[i] = EvalRow{e_step[i], e_tok[i], e_loss[i]};
}

void PartReader::read_routing(RunMetrics& out) {
  const hsize_t nr = group_rows(kRoutingSets, std::size(kRoutingSets));
  std::vector<hsize_t> load_shape, dropped_shape, entropy_shape;
  auto step = read<int64_t>(hl::kRoutingStep, H5T_NATIVE_INT64, nr);
  auto load = read<int64_t>(hl::kRoutingExpertLoad, H5T_NATIVE_INT64, nr, &load_shape);
  if (load_shape.size() != 3) fail(std::string("dataset ") + hl::kRoutingExpertLoad + " is not 3-D");
  auto dropped = read<double>(hl::kRoutingDroppedFraction, H5T_NATIVE_DOUBLE, nr, &dropped_shape);
  auto entropy = read<double>(hl::kRoutingEntropy, H5T_NATIVE_DOUBLE, nr, &entropy_shape);
  // Every consumer indexes [row][block][expert]: the shapes must agree.
  const hsize_t blocks = load_shape[1];
  std::vector<double> balance, z;
  std::vector<hsize_t> balance_shape = entropy_shape, z_shape = entropy_shape;
  if (version_ >= 2) {
    balance = read<double>(hl::kRoutingBalanceLoss, H5T_NATIVE_DOUBLE, nr, &balance_shape);
    z = read<double>(hl::kRoutingZLoss, H5T_NATIVE_DOUBLE, nr, &z_shape);
  } else {
    balance.assign(entropy.size(), std::numeric_limits<double>::quiet_NaN());
    z = balance;
  }
  if (step.size() != nr || dropped_shape.size() != 2 || entropy_shape.size() != 2 || dropped_shape[1] != blocks ||
      entropy_shape[1] != blocks || balance_shape.size() != 2 || balance_shape[1] != blocks || z_shape.size() != 2 ||
      z_shape[1] != blocks)
    fail("the /routing datasets disagree on their shapes");
  out.routing_step = std::move(step);
  out.routing_expert_load = std::move(load);
  out.routing_dropped = std::move(dropped);
  out.routing_entropy = std::move(entropy);
  out.routing_balance = std::move(balance);
  out.routing_z = std::move(z);
  out.routing_blocks = int64_t(blocks);
  out.routing_experts = int64_t(load_shape[2]);
}

// An attribute that exists but does not read is damage, not absence: the
// resume must not reuse such a file in place (rewriting the attribute would
// fail or crash), and the analysis must not take it for a missing one.
void PartReader::read_attrs(RunMetrics& out) {
  for (const std::string& name : h5::attr_names(file_)) {
    if (h5::attr_is_string(file_, name)) {
      std::string s;
      if (!h5::read_attr_str(file_, name, s)) fail("attribute " + name + " unreadable");
      out.str_attrs[name] = s;
    } else {
      double v;
      if (!h5::read_attr_f64(file_, name, v)) fail("attribute " + name + " unreadable");
      out.num_attrs[name] = v;
    }
  }
}

void derive_final_eval(RunMetrics& m) {
  auto get = [&](const char* k, double& v) {
    auto it = m.num_attrs.find(k);
    if (it == m.num_attrs.end()) return false;
    v = it->second;
    return true;
  };
  double loss, se, tokens, step;
  m.has_final_eval = get(hl::kAttrFinalEvalLoss, loss) && get(hl::kAttrFinalEvalStderr, se) &&
                     get(hl::kAttrFinalEvalTokens, tokens) && get(hl::kAttrFinalEvalStep, step);
  if (m.has_final_eval) m.final_eval = FinalEval{int64_t(step), int64_t(tokens), loss, se};
}

}  // namespace metrics_detail

RunMetrics read_metrics(const std::string& path) {
  metrics_detail::PartReader r(path);
  const int64_t version = r.format_version();
  if (!metrics_detail::readable_version(version))
    r.fail("format_version " + std::to_string(version) + ", this build reads " +
           std::to_string(h5layout::kMetricsOldestReadableVersion) + " to " +
           std::to_string(h5layout::kMetricsFormatVersion));
  RunMetrics out;
  out.path = path;
  r.read_attrs(out);
  metrics_detail::derive_final_eval(out);
  r.read_train(out);
  r.read_eval(out);
  r.read_routing(out);
  return out;
}

}  // namespace finemoe
