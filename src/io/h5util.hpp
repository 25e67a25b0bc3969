// Small helpers over the HDF5 C API for metrics.cpp and checkpoint.cpp:
// move-only RAII handles, attribute/dataset helpers, and error translation.
//
// Why: HDF5 reports failures by printing an error stack to stderr and
// returning a negative id. finemoe turns every failure into a finemoe::Error
// (or DataError for bad input files) whose message names the file and what
// failed; the innermost HDF5 message is appended as a detail, never printed on
// its own. Call silence() at every entry point (the auto-printer is global).
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace finemoe::h5 {

// A hid_t with the close function that matches its kind.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { close(); }
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      close();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; returns false if HDF5 reported a failure (e.g. a file whose
  // final flush hit a full disk). Safe to call twice.
  bool close() {
    if (id_ < 0) return true;
    herr_t rc = closer_ ? closer_(id_) : 0;
    id_ = H5I_INVALID_HID;
    return rc >= 0;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

inline Handle file(hid_t id) { return Handle(id, H5Fclose); }
inline Handle group(hid_t id) { return Handle(id, H5Gclose); }
inline Handle dataset(hid_t id) { return Handle(id, H5Dclose); }
inline Handle space(hid_t id) { return Handle(id, H5Sclose); }
inline Handle attr(hid_t id) { return Handle(id, H5Aclose); }
inline Handle plist(hid_t id) { return Handle(id, H5Pclose); }
inline Handle type(hid_t id) { return Handle(id, H5Tclose); }

// Turns off HDF5's automatic error-stack printing for this process.
void silence();
// The innermost message of the current HDF5 error stack ("" if empty), e.g.
// "truncated file: eof = 1024, ...". Clears the stack.
std::string detail();
// " (HDF5: <detail>)" or "" — for appending to our own messages.
std::string detail_suffix();

// True if `path` (absolute, e.g. "/params/wte") names an existing link,
// checking every intermediate group so HDF5 never errors.
bool exists(hid_t loc, const std::string& path);
// True if the file starts with the HDF5 signature (no error stack).
bool is_hdf5(const std::string& filename);

// Attributes on an object (file root, group, dataset). Writers replace an
// attribute of the same name. Return false on failure (caller names the file).
bool write_attr_i64(hid_t obj, const std::string& name, int64_t v);
bool write_attr_u64(hid_t obj, const std::string& name, uint64_t v);
bool write_attr_i32(hid_t obj, const std::string& name, int32_t v);
bool write_attr_f64(hid_t obj, const std::string& name, double v);
bool write_attr_str(hid_t obj, const std::string& name, const std::string& v);  // variable-length UTF-8

bool has_attr(hid_t obj, const std::string& name);
bool attr_is_string(hid_t obj, const std::string& name);
// Readers convert any numeric attribute; false if absent or not convertible.
bool read_attr_f64(hid_t obj, const std::string& name, double& out);
bool read_attr_i64(hid_t obj, const std::string& name, int64_t& out);
bool read_attr_u64(hid_t obj, const std::string& name, uint64_t& out);
// Fixed- or variable-length strings.
bool read_attr_str(hid_t obj, const std::string& name, std::string& out);
// Names of every attribute of obj.
std::vector<std::string> attr_names(hid_t obj);

// Dimensions of a dataset's dataspace (empty vector on failure).
std::vector<hsize_t> dims(hid_t dset);

}  // namespace finemoe::h5
