#include "io/h5util.hpp"

#include <cstring>
#include <fstream>

namespace finemoe::h5 {

void silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
herr_t first_desc(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::string*>(data);
  // Walking upward, entry 0 is where the library detected the problem: the
  // most specific message ("truncated file ...", "file signature not found").
  if (n == 0 && e && e->desc) *out = e->desc;
  return 0;
}
}  // namespace

std::string detail() {
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_desc, &out);
  H5Eclear2(H5E_DEFAULT);
  return out;
}

std::string detail_suffix() {
  std::string d = detail();
  return d.empty() ? std::string() : " (HDF5: " + d + ")";
}

bool exists(hid_t loc, const std::string& path) {
  // Check every prefix ending before a '/' and the full path: "/a", "/a/b", ...
  for (size_t end = 1; end <= path.size(); ++end) {
    if (end < path.size() && path[end] != '/') continue;
    if (path[end - 1] == '/') continue;  // "/" itself or "//"
    if (H5Lexists(loc, path.substr(0, end).c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return !path.empty();
}

bool is_hdf5(const std::string& filename) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  std::ifstream f(filename, std::ios::binary);
  if (!f) return false;
  // The superblock sits at 0 or, after a user block, at 512, 1024, 2048, ...
  for (std::streamoff off = 0; off <= (std::streamoff(1) << 30); off = off ? off * 2 : 512) {
    unsigned char buf[8];
    f.clear();
    f.seekg(off);
    if (!f.read(reinterpret_cast<char*>(buf), 8)) return false;
    if (std::memcmp(buf, sig, 8) == 0) return true;
  }
  return false;
}

namespace {
bool write_attr(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type, const void* buf) {
  if (H5Aexists(obj, name.c_str()) > 0 && H5Adelete(obj, name.c_str()) < 0) return false;
  Handle sp = space(H5Screate(H5S_SCALAR));
  if (!sp.valid()) return false;
  Handle a = attr(H5Acreate2(obj, name.c_str(), file_type, sp, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid()) return false;
  if (H5Awrite(a, mem_type, buf) < 0) return false;
  return a.close();
}

// Opens a one-element numeric attribute; invalid handle otherwise.
Handle open_scalar(hid_t obj, const std::string& name, bool want_string) {
  if (H5Aexists(obj, name.c_str()) <= 0) return Handle();
  Handle a = attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (!a.valid()) return Handle();
  Handle sp = space(H5Aget_space(a));
  if (!sp.valid() || H5Sget_simple_extent_npoints(sp) != 1) return Handle();
  Handle t = type(H5Aget_type(a));
  if (!t.valid()) return Handle();
  H5T_class_t c = H5Tget_class(t);
  bool ok = want_string ? c == H5T_STRING : (c == H5T_INTEGER || c == H5T_FLOAT);
  return ok ? std::move(a) : Handle();
}
}  // namespace

bool write_attr_i64(hid_t obj, const std::string& name, int64_t v) {
  return write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
bool write_attr_u64(hid_t obj, const std::string& name, uint64_t v) {
  return write_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
bool write_attr_i32(hid_t obj, const std::string& name, int32_t v) {
  return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &v);
}
bool write_attr_f64(hid_t obj, const std::string& name, double v) {
  return write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
bool write_attr_str(hid_t obj, const std::string& name, const std::string& v) {
  Handle t = type(H5Tcopy(H5T_C_S1));
  if (!t.valid() || H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) return false;
  const char* p = v.c_str();
  return write_attr(obj, name, t, t, &p);
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

bool attr_is_string(hid_t obj, const std::string& name) { return open_scalar(obj, name, true).valid(); }

bool read_attr_f64(hid_t obj, const std::string& name, double& out) {
  Handle a = open_scalar(obj, name, false);
  return a.valid() && H5Aread(a, H5T_NATIVE_DOUBLE, &out) >= 0;
}
bool read_attr_i64(hid_t obj, const std::string& name, int64_t& out) {
  Handle a = open_scalar(obj, name, false);
  return a.valid() && H5Aread(a, H5T_NATIVE_INT64, &out) >= 0;
}
bool read_attr_u64(hid_t obj, const std::string& name, uint64_t& out) {
  Handle a = open_scalar(obj, name, false);
  return a.valid() && H5Aread(a, H5T_NATIVE_UINT64, &out) >= 0;
}

bool read_attr_str(hid_t obj, const std::string& name, std::string& out) {
  Handle a = open_scalar(obj, name, true);
  if (!a.valid()) return false;
  Handle ft = type(H5Aget_type(a));
  if (H5Tis_variable_str(ft) > 0) {
    Handle mt = type(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(ft));
    char* p = nullptr;
    if (H5Aread(a, mt, &p) < 0) return false;
    out = p ? std::string(p) : std::string();
    if (p) H5free_memory(p);
    return true;
  }
  size_t n = H5Tget_size(ft);
  if (n == 0) return false;
  Handle mt = type(H5Tcopy(H5T_C_S1));
  H5Tset_size(mt, n);
  H5Tset_strpad(mt, H5T_STR_NULLPAD);
  std::string buf(n, '\0');
  if (H5Aread(a, mt, buf.data()) < 0) return false;
  buf.resize(std::strlen(buf.c_str()));
  out = std::move(buf);
  return true;
}

namespace {
herr_t collect_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> attr_names(hid_t obj) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &names);
  return names;
}

std::vector<hsize_t> dims(hid_t dset) {
  Handle sp = space(H5Dget_space(dset));
  if (!sp.valid()) return {};
  int rank = H5Sget_simple_extent_ndims(sp);
  if (rank < 0) return {};
  std::vector<hsize_t> d(size_t(rank), 0);
  if (rank > 0 && H5Sget_simple_extent_dims(sp, d.data(), nullptr) < 0) return {};
  return d;
}

}  // namespace finemoe::h5
