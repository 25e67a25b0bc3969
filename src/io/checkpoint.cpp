// Checkpoints with parallel HDF5 (layout: h5layout.hpp).
//
// Every tensor is stored at its GLOBAL shape, so the number of ranks and the
// EP size may change between save and load. Expert tensors are written by the
// ranks of DP replica 0, each its own rows (collective MPI-IO transfer; every
// other rank selects nothing), replicated tensors by rank 0. All ranks create
// every object (HDF5 metadata operations are collective).
//
// Crash safety: write checkpoints/.tmp_step_N.h5, flush (MPI_File_sync), close,
// fsync, rename to step_N.h5, fsync the directory, then replace LATEST the
// same way. A kill at any moment leaves LATEST naming a complete file.
//
// Integrity: tensors are chunked datasets with the Fletcher32 filter (HDF5
// verifies it on every read, in any reader), and the file uses the 1.10
// format, whose metadata carries checksums, so a changed byte anywhere that
// matters fails the load instead of training on it. The /state strings are
// fixed-length attributes: they live in the checksummed object header
// (variable-length ones would sit in the unchecksummed global heap). With
// parallel HDF5 1.10 a filtered dataset must be written collectively, so
// replicated tensors go through a collective transfer too (rank 0 selects
// its rows, every other rank nothing).
//
// Which checkpoint run.resume=auto picks: checkpoint_resume.cpp.
//
// Errors: every rank records its first failure and keeps going through the
// collective calls; agree() then gives every rank the same message, so a
// failure on one rank never leaves the others waiting in a collective.
//
// Memory: the store's tensors are in its backend's memory (params.hpp), so
// every tensor passes through a host staging array, one tensor at a time:
// copy_to_host before a write, copy_from_host after a read that succeeded.
// Host memory beyond the store is the largest local tensor.
#include "finemoe/checkpoint.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <mpi.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <vector>

#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/log.hpp"
#include "io/h5util.hpp"

namespace finemoe {

namespace hl = h5layout;

namespace {

MPI_Comm world_of(const Comm& comm) { return *static_cast<const MPI_Comm*>(comm.native(Group::world)); }

// One error shared by all ranks: kind 'D' (DataError), 'C' (ConfigError) or
// 'E' (Error), and the message of the lowest failing rank.
struct Failure {
  char kind = 0;
  std::string msg;
  void set(char k, const std::string& m) {
    if (!kind) {
      kind = k;
      msg = m;
    }
  }
  explicit operator bool() const { return kind != 0; }
};

Failure agree(const Comm& comm, const Failure& local) {
  if (!comm.any(bool(local))) return {};
  // The lowest failing rank: the minimum, as minus the maximum of minus the
  // ranks (exact in a double), through the Comm interface.
  const int me = local ? comm.rank() : comm.size();
  const int first = int(-comm.allreduce_max(-double(me), Group::world));
  std::string text = std::string(1, local.kind ? local.kind : 'E') + local.msg;
  comm.broadcast(text, first);
  Failure f;
  f.kind = text.empty() ? 'E' : text[0];
  f.msg = text.size() > 1 ? text.substr(1) : "failure on rank " + std::to_string(first);
  return f;
}

[[noreturn]] void raise(const Failure& f) {
  if (f.kind == 'D') throw DataError(f.msg);
  if (f.kind == 'C') throw ConfigError(f.msg);
  throw Error(f.msg);
}

std::string step_file(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step_%07lld.h5", static_cast<long long>(step));
  return buf;
}

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// mkdir -p; "" on success, else the message.
std::string make_dirs(const std::string& path) {
  std::string cur;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += (cur.empty() || cur.back() == '/') ? part : "/" + part;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("cannot create directory", cur);
    struct stat st;
    if (::stat(cur.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "cannot create directory " + cur + ": " + std::strerror(ENOTDIR);
  }
  return "";
}

bool fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Writes `text` to path atomically: tmp file, fsync, rename, fsync dir.
std::string write_atomic(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string tmp = dir + "/." + name + ".tmp", dst = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return sys_error("cannot create", tmp);
  ssize_t n = ::write(fd, text.data(), text.size());
  bool ok = n == ssize_t(text.size()) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    errno = saved ? saved : ENOSPC;
    return sys_error("cannot write", tmp);
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    std::string e = sys_error("cannot rename " + tmp + " to", dst);
    ::unlink(tmp.c_str());
    return e;
  }
  fsync_path(dir, true);
  return "";
}

// Checkpoint files in dir: step -> file name (step_N.h5 or, if tmp, .tmp_step_N.h5).
std::map<int64_t, std::string> list_checkpoints(const std::string& dir, bool tmp) {
  std::map<int64_t, std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  const std::string prefix = tmp ? ".tmp_step_" : "step_";
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() <= prefix.size() + 3 || n.compare(0, prefix.size(), prefix) != 0 ||
        n.compare(n.size() - 3, 3, ".h5") != 0)
      continue;
    std::string digits = n.substr(prefix.size(), n.size() - prefix.size() - 3);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    out[std::stoll(digits)] = n;
  }
  ::closedir(d);
  return out;
}

// Rows [row0, row0 + nrows) of a 2-D view (row_elems per row) between the
// file and a contiguous buffer, in batches of <= 2^28 values (MPI-IO counts
// are ints). Every rank of a collective transfer calls this with the same
// nrows; ranks with participate=false select nothing.
bool rows_io(bool write, hid_t ds, const std::vector<hsize_t>& shape, int64_t row0, int64_t nrows,
             int64_t row_elems, float* buf, hid_t dxpl, bool participate, std::string* hdf5_error = nullptr) {
  const int64_t per_batch = std::max<int64_t>(1, (int64_t(1) << 28) / std::max<int64_t>(row_elems, 1));
  h5::Handle fs = h5::space(H5Dget_space(ds));
  if (!fs.valid()) return false;
  bool ok = true;
  for (int64_t r = 0; r < nrows; r += per_batch) {
    const int64_t n = std::min(per_batch, nrows - r);
    std::vector<hsize_t> start(shape.size(), 0), cnt = shape;
    start[0] = hsize_t(row0 + r);
    cnt[0] = hsize_t(n);
    // The memory space has the file block's shape (not a flat 1-D one):
    // for chunked datasets HDF5 maps memory to chunks with a fast hyperslab
    // path only when the shapes agree, else element by element (measured
    // 40x slower on a 1.8 GB checkpoint).
    h5::Handle ms = h5::space(H5Screate_simple(int(cnt.size()), cnt.data(), nullptr));
    if (!ms.valid()) return false;
    if (participate) {
      if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr) < 0) ok = false;
    } else {
      H5Sselect_none(fs);
      H5Sselect_none(ms);
    }
    float* p = buf + r * row_elems;
    herr_t rc = write ? H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, dxpl, p) : H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, dxpl, p);
    if (rc < 0) {
      // Now: the next HDF5 call (even a close) clears the error stack.
      if (hdf5_error && ok) *hdf5_error = h5::detail();
      ok = false;  // keep going: collective partners expect every call
    }
  }
  return ok;
}

h5::Handle mpio_fapl(const Comm& comm) {
  h5::Handle fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_mpio(fapl, world_of(comm), MPI_INFO_NULL);
  H5Pset_file_locking(fapl, false, true);
  // The 1.10 file format: checksummed superblock, object headers and chunk
  // index (the 1.8-compatible default has none). Readers need HDF5 >= 1.10.
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  return fapl;
}

// Chunks are whole rows (a chunk is the unit Fletcher32 checks). Expert
// tensors: one expert row per chunk, so no chunk spans two EP ranks' rows,
// whatever the EP size. Replicated tensors: about kChunkBytes per chunk.
constexpr int64_t kChunkBytes = int64_t(1) << 22;
std::vector<hsize_t> chunk_dims(const ParamInfo& p, const std::vector<hsize_t>& shape) {
  std::vector<hsize_t> c = shape;
  const int64_t row_bytes = std::max<int64_t>(1, p.row_elems() * 4);
  int64_t rows = p.cls == ParamClass::expert ? 1 : std::max<int64_t>(1, kChunkBytes / row_bytes);
  c[0] = hsize_t(std::min<int64_t>(rows, int64_t(shape[0])));
  return c;
}

// A fixed-length string attribute (kept in the checksummed object header).
bool write_attr_fixed_str(hid_t obj, const std::string& name, const std::string& v) {
  h5::Handle t = h5::type(H5Tcopy(H5T_C_S1));
  // ASCII cset: h5::read_attr_str reads fixed strings as ASCII, and HDF5 does
  // not convert between csets (UTF-8 bytes pass through unchanged anyway).
  if (!t.valid() || H5Tset_size(t, std::max<size_t>(1, v.size())) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0)
    return false;
  h5::Handle sp = h5::space(H5Screate(H5S_SCALAR));
  h5::Handle a = h5::attr(H5Acreate2(obj, name.c_str(), t, sp, H5P_DEFAULT, H5P_DEFAULT));
  std::string buf = v.empty() ? std::string(1, '\0') : v;
  return a.valid() && H5Awrite(a, t, buf.data()) >= 0 && a.close();
}

bool has_fletcher32(hid_t ds) {
  h5::Handle dcpl = h5::plist(H5Dget_create_plist(ds));
  if (!dcpl.valid()) return false;
  unsigned flags = 0;
  size_t nelem = 0;
  char name[32];
  unsigned config = 0;
  return H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &nelem, nullptr, sizeof name, name, &config) >= 0;
}

// Moves a checkpoint this run does not own out of the way of a new one of the
// same step: step_N.h5 -> step_N.h5.kept (.kept.2, ...). "" or the new name.
std::string keep_aside(const std::string& path) {
  for (int i = 1; i < 1000; ++i) {
    const std::string to = path + ".kept" + (i == 1 ? std::string() : "." + std::to_string(i));
    struct stat st;
    if (::stat(to.c_str(), &st) == 0) continue;
    return ::rename(path.c_str(), to.c_str()) == 0 ? to : "";
  }
  return "";
}

const char* const kGroups[] = {hl::kCkptParams, hl::kCkptAdamM, hl::kCkptAdamV};

// Host staging array for one tensor of `store` at a time: as many floats as
// its largest local tensor or buffer (at least one, so that data() is never
// null, even for a rank that selects nothing).
std::vector<float> staging_for(const ParamStore& store) {
  int64_t n = 1;
  for (const ParamInfo& p : store.params()) n = std::max(n, p.local_count);
  for (const BufferInfo& b : store.buffers()) n = std::max(n, b.count);
  return std::vector<float>(size_t(n));
}

// Bytes a checkpoint of `store` takes: params and two moments at global
// shape, plus object headers and the config (generous).
int64_t estimate_bytes(const ParamStore& store) {
  int64_t bytes = 64 * 1024;
  for (const ParamInfo& p : store.params()) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    bytes += 3 * (4 * n + 4096);
  }
  for (const BufferInfo& b : store.buffers()) bytes += 4 * b.count + 4096;
  return bytes + bytes / 100;
}

// Refuses up front what would fail mid-write: too little free space in dir,
// or a file size limit (ulimit -f) below the checkpoint's size. Failing here
// creates no file at all. FINEMOE_TEST_NO_SPACE_CHECK=1 skips the check so
// tests can reach the mid-write failure path.
std::string space_problem(const std::string& dir, int64_t need) {
  const char* skip = std::getenv("FINEMOE_TEST_NO_SPACE_CHECK");
  if (skip && std::string(skip) == "1") return "";
  auto mib = [](double b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
    return std::string(buf);
  };
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) == 0) {
    const double avail = double(vfs.f_bavail) * double(vfs.f_frsize);
    if (avail < double(need))
      return "needs about " + mib(double(need)) + " but only " + mib(avail) + " are free on " + dir + " (disk full)";
  }
  struct rlimit rl;
  if (::getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && double(rl.rlim_cur) < double(need))
    return "needs about " + mib(double(need)) + " but the file size limit (ulimit -f) is " + mib(double(rl.rlim_cur));
  return "";
}

// "section.key = value" pairs of INI text (checkpoint's stored config),
// parsed leniently so a checkpoint from a build with other keys still reports
// precise differences.
std::map<std::string, std::string> parse_ini(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream is(text);
  std::string line, section;
  auto trim = [](std::string s) {
    size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  while (std::getline(is, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    out[section + "." + trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

}  // namespace

// ---- save -------------------------------------------------------------------

std::string save_checkpoint(const std::string& run_dir, const ParamStore& store, const TrainState& state,
                            const Config& cfg, const Comm& comm, CheckpointOwnership& owned) {
  h5::silence();
  const std::string dir = run_dir + "/checkpoints";
  const std::string name = step_file(state.step);
  const std::string tmp = dir + "/.tmp_" + name, dst = dir + "/" + name;
  Failure local;

  if (store.ep_size() != comm.ep_size() || store.ep_rank() != comm.ep_rank())
    local.set('E', "checkpoint " + tmp + ": ParamStore was built for EP " + std::to_string(store.ep_size()) +
                       " rank " + std::to_string(store.ep_rank()) + ", the process grid has EP " +
                       std::to_string(comm.ep_size()) + " rank " + std::to_string(comm.ep_rank()));
  if (comm.rank() == 0 && !local) {
    std::string e = make_dirs(dir);
    if (!e.empty()) local.set('E', "checkpoint directory " + dir + ": " + e);
    // Temp files of writers killed earlier: never complete, never named by LATEST.
    for (const auto& [step, file] : list_checkpoints(dir, true)) ::unlink((dir + "/" + file).c_str());
    if (!local) {
      std::string e = space_problem(dir, estimate_bytes(store));
      if (!e.empty()) local.set('E', "checkpoint " + tmp + ": " + e);
    }
  }
  if (Failure f = agree(comm, local)) raise(f);

  h5::Handle fapl = mpio_fapl(comm);
  h5::Handle file = h5::file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  if (!file.valid()) local.set('E', "checkpoint " + tmp + ": cannot create the file" + h5::detail_suffix());
  if (Failure f = agree(comm, local)) {
    file.close();
    if (comm.rank() == 0) ::unlink(tmp.c_str());
    raise(f);
  }
  auto fail = [&](const std::string& what) { local.set('E', "checkpoint " + tmp + ": " + what + h5::detail_suffix()); };

  {
    h5::Handle lcpl = h5::plist(H5Pcreate(H5P_LINK_CREATE));
    H5Pset_create_intermediate_group(lcpl, 1);
    h5::Handle coll = h5::plist(H5Pcreate(H5P_DATASET_XFER));
    H5Pset_dxpl_mpio(coll, H5FD_MPIO_COLLECTIVE);

    for (const char* g : {hl::kCkptParams, hl::kCkptAdamM, hl::kCkptAdamV, hl::kCkptBuffers, hl::kCkptState}) {
      h5::Handle grp = h5::group(H5Gcreate2(file, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      if (!grp.valid()) fail(std::string("cannot create group ") + g);
    }
    const bool expert_writer = comm.dp_rank() == 0;  // DP replica 0 holds the reference copy
    Backend& be = store.backend();
    std::vector<float> host = staging_for(store);
    for (const ParamInfo& p : store.params()) {
      std::vector<hsize_t> shape(p.global_shape.begin(), p.global_shape.end());
      h5::Handle sp = h5::space(H5Screate_simple(int(shape.size()), shape.data(), nullptr));
      h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
      const std::vector<hsize_t> chunk = chunk_dims(p, shape);
      // Fill never: every byte is written below (parallel HDF5 allocates
      // chunks at creation and would otherwise write fill chunks first).
      if (H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()) < 0 || H5Pset_fletcher32(dcpl) < 0 ||
          H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
        fail("cannot set up the checksum filter for " + p.name);
      const float* bufs[3] = {store.params(p.cls).data() + p.offset, store.moments_m(p.cls).data() + p.offset,
                              store.moments_v(p.cls).data() + p.offset};
      for (int k = 0; k < 3; ++k) {
        const std::string ds_name = std::string(kGroups[k]) + "/" + p.name;
        h5::Handle ds = h5::dataset(H5Dcreate2(file, ds_name.c_str(), H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT));
        if (!ds.valid()) {
          fail("cannot create dataset " + ds_name);
          continue;
        }
        const bool writer = p.cls == ParamClass::expert ? expert_writer : comm.rank() == 0;
        if (writer) be.copy_to_host(host.data(), bufs[k], p.local_count * int64_t(sizeof(float)));
        const int64_t row0 = p.cls == ParamClass::expert ? p.row0 : 0;
        if (!rows_io(true, ds, shape, row0, p.local_rows, p.row_elems(), host.data(), coll, writer))
          fail("cannot write dataset " + ds_name + " (disk full?)");
      }
    }

    // Buffers (non-trainable state, identical on every rank): rank 0 writes.
    for (const BufferInfo& b : store.buffers()) {
      const std::vector<hsize_t> shape(b.shape.begin(), b.shape.end());
      const std::string ds_name = std::string(hl::kCkptBuffers) + "/" + b.name;
      h5::Handle sp = h5::space(H5Screate_simple(int(shape.size()), shape.data(), nullptr));
      h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
      if (H5Pset_chunk(dcpl, int(shape.size()), shape.data()) < 0 || H5Pset_fletcher32(dcpl) < 0 ||
          H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
        fail("cannot set up the checksum filter for " + ds_name);
      h5::Handle ds = h5::dataset(H5Dcreate2(file, ds_name.c_str(), H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT));
      if (!ds.valid()) {
        fail("cannot create dataset " + ds_name);
        continue;
      }
      const int64_t rows = b.shape.empty() ? 1 : b.shape[0];
      if (comm.rank() == 0) be.copy_to_host(host.data(), store.buffer(b.name), b.count * int64_t(sizeof(float)));
      if (!rows_io(true, ds, shape, 0, rows, rows ? b.count / rows : 0, host.data(), coll, comm.rank() == 0))
        fail("cannot write dataset " + ds_name + " (disk full?)");
    }

    h5::Handle st = h5::group(H5Gopen2(file, hl::kCkptState, H5P_DEFAULT));
    if (!st.valid() || !h5::write_attr_i64(st, hl::kCkptStep, state.step) ||
        !h5::write_attr_i64(st, hl::kCkptTokens, state.tokens) || !h5::write_attr_u64(st, hl::kCkptSeed, state.seed) ||
        !write_attr_fixed_str(st, hl::kCkptConfigHash, cfg.shape_keys_hash()) ||
        !write_attr_fixed_str(st, hl::kCkptConfigIni, cfg.to_ini()) ||
        !h5::write_attr_i32(st, hl::kCkptFormatVersion, hl::kCheckpointFormatVersion) ||
        !write_attr_fixed_str(st, hl::kCkptPrecision, state.precision) ||
        !write_attr_fixed_str(st, hl::kCkptFp32Engine, state.fp32_engine))
      fail("cannot write the /state attributes");
  }
  // A failed write (disk full) dooms the file. Free its blocks before HDF5
  // closes it: libhdf5 1.10 cannot recover from a close whose final metadata
  // flush fails (the id dangles and MPI_Finalize crashes), and with the data
  // gone the few metadata writes of the close fit again.
  auto abandon = [&](const Failure& f) {
    if (comm.rank() == 0) ::truncate(tmp.c_str(), 0);
    comm.barrier();
    file.close();
    if (comm.rank() == 0) ::unlink(tmp.c_str());
    raise(f);
  };
  if (Failure f = agree(comm, local)) abandon(f);
  // Flush first: with MPI-IO this is MPI_File_sync on every rank, so each
  // rank's data is durable, not only rank 0's.
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail("flush failed (disk full?)");
  if (Failure f = agree(comm, local)) abandon(f);
  if (!file.close()) fail("close failed (disk full?)");

  if (!local && comm.rank() == 0) {
    struct stat old_st;
    std::string aside;
    // Never overwrite a checkpoint this run did not write or resume through.
    if (::stat(dst.c_str(), &old_st) == 0 && !owned.owns(state.step)) {
      aside = keep_aside(dst);
      if (aside.empty()) local.set('E', sys_error("checkpoint: cannot move aside the earlier", dst));
      else log::warn("checkpoint: %s was not written by this run (it did not resume from it); kept as %s",
                     dst.c_str(), aside.c_str());
    }
    if (local) {
    } else if (!fsync_path(tmp, false)) local.set('E', sys_error("checkpoint: cannot fsync", tmp));
    else if (::rename(tmp.c_str(), dst.c_str()) != 0)
      local.set('E', sys_error("checkpoint: cannot rename " + tmp + " to", dst));
    else {
      fsync_path(dir, true);
      std::string e = write_atomic(dir, hl::kCkptLatestFile, name + "\n");
      if (!e.empty()) local.set('E', "checkpoint " + dst + " written but LATEST not updated: " + e);
    }
  }
  Failure f = agree(comm, local);  // also the barrier: LATEST is final when anyone returns
  if (f) {
    if (comm.rank() == 0) ::unlink(tmp.c_str());
    raise(f);
  }

  owned.written.insert(state.step);
  if (comm.rank() == 0) {
    // Keep the newest `checkpoint_keep` of this run's own (the one just
    // written always counts); never touch another run's or a skipped one.
    int64_t keep = std::max<int64_t>(1, cfg.train.checkpoint_keep) - 1;
    auto all = list_checkpoints(dir, false);
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      if (it->first == state.step || !owned.owns(it->first)) continue;
      if (keep > 0) {
        --keep;
        continue;
      }
      const std::string old = dir + "/" + it->second;
      if (::unlink(old.c_str()) != 0) log::warn("checkpoint: cannot delete old %s: %s", old.c_str(), std::strerror(errno));
    }
  }
  return dst;
}

// ---- load -------------------------------------------------------------------

namespace {

// Why reading tensor `ds_name` failed, from HDF5's detail `d`: a Fletcher32
// checksum mismatch (bytes changed after writing) or any other failure.
std::string tensor_read_failure(const std::string& ds_name, const std::string& d) {
  std::string low = d;
  std::transform(low.begin(), low.end(), low.begin(), ::tolower);
  if (low.find("checksum") != std::string::npos)
    return "checksum mismatch in tensor " + ds_name + ": its stored bytes changed after they were written (HDF5: " +
           d + ")";
  return "cannot read tensor " + ds_name + (d.empty() ? "" : " (HDF5: " + d + ")");
}

// The /state checks that need only the file: format version, presence and
// range of step/tokens/seed, the stored config's shape keys against `cfg`,
// and the scalars against the stored config (a value edited or damaged after
// writing would otherwise resume at a wrong step or data position).
void check_state(hid_t file, const std::string& where, const Config& cfg, TrainState& state, int64_t& version,
                 Failure& local) {
  h5::Handle st;
  if (!h5::exists(file, hl::kCkptState) || !(st = h5::group(H5Gopen2(file, hl::kCkptState, H5P_DEFAULT))).valid())
    return local.set('D', where + "group /state missing or unreadable" + h5::detail_suffix());
  std::string ini, hash;
  if (!h5::read_attr_i64(st, hl::kCkptFormatVersion, version))
    return local.set('D', where + "attribute /state/format_version missing or unreadable" + h5::detail_suffix());
  if (version < 1 || version > hl::kCheckpointFormatVersion)
    return local.set('D', where + "format_version " + std::to_string(version) + ", this build reads 1 to " +
                              std::to_string(hl::kCheckpointFormatVersion));
  if (!h5::read_attr_i64(st, hl::kCkptStep, state.step) || !h5::read_attr_i64(st, hl::kCkptTokens, state.tokens) ||
      !h5::read_attr_u64(st, hl::kCkptSeed, state.seed))
    return local.set('D', where + "attributes /state/step, tokens or seed missing" + h5::detail_suffix());
  if (!h5::read_attr_str(st, hl::kCkptConfigIni, ini) || !h5::read_attr_str(st, hl::kCkptConfigHash, hash))
    return local.set('D', where + "attribute /state/config or config_hash missing" + h5::detail_suffix());

  // Shape keys must match; training-only keys may change on resume.
  auto stored = parse_ini(ini);
  const auto pairs = cfg.to_pairs();
  std::map<std::string, std::string> now(pairs.begin(), pairs.end());
  std::string diffs;
  for (const std::string& key : Config::shape_keys()) {
    auto it = stored.find(key);
    std::string was = it == stored.end() ? "(absent)" : it->second;
    if (was != now[key]) diffs += "\n  " + key + ": checkpoint " + was + ", current config " + now[key];
  }
  if (!diffs.empty())
    return local.set('C', where + "model shape differs from the current config; keys that must match:" + diffs);
  if (hash != cfg.shape_keys_hash())
    return local.set('D', where + "/state/config_hash " + hash + " does not match its stored config (" +
                              cfg.shape_keys_hash() + ")");

  auto stored_int = [&](const std::string& key, long double& out) {
    auto it = stored.find(key);
    if (it == stored.end()) return false;
    char* end = nullptr;
    out = std::strtold(it->second.c_str(), &end);
    return end && *end == '\0' && !it->second.empty();
  };
  long double batch = 0, seq = 0, seed = 0;
  if (!stored_int("train.batch_size", batch) || !stored_int("model.seq_len", seq) || !stored_int("train.seed", seed))
    return local.set('D', where + "/state/config lacks train.batch_size, model.seq_len or train.seed");
  const std::string s = std::to_string(state.step);
  if (state.step < 0 || state.step > cfg.train.steps)
    return local.set('D', where + "/state/step = " + s + " is outside [0, train.steps = " +
                              std::to_string(cfg.train.steps) + "]" +
                              (state.step > cfg.train.steps ? " (a longer run's checkpoint? raise train.steps)" : ""));
  const long double want_tokens = (long double)state.step * batch * seq;
  if ((long double)state.tokens != want_tokens)
    return local.set('D', where + "/state/tokens = " + std::to_string(state.tokens) + " but step " + s +
                              " x train.batch_size " + stored["train.batch_size"] + " x model.seq_len " +
                              stored["model.seq_len"] + " = " + std::to_string((long long)want_tokens));
  if ((long double)state.seed != seed)
    return local.set('D', where + "/state/seed = " + std::to_string(state.seed) + " but its config has train.seed " +
                              stored["train.seed"]);

  // The GEMM set-up the run resolved (format_version 4); before that the
  // engine was always OpenBLAS and the precision is known only when the
  // stored config did not say auto.
  if (version < 4) {
    const std::string p = stored.count("train.precision") ? stored["train.precision"] : "fp32";
    state.precision = p == "fp32" || p == "bf16" ? p : "";
    state.fp32_engine = "openblas";
    return;
  }
  if (!h5::read_attr_str(st, hl::kCkptPrecision, state.precision) ||
      !h5::read_attr_str(st, hl::kCkptFp32Engine, state.fp32_engine))
    return local.set('D', where + "attribute /state/precision or fp32_engine missing, which format_version " +
                              std::to_string(version) + " requires" + h5::detail_suffix());
  if (state.precision != "fp32" && state.precision != "bf16")
    return local.set('D', where + "/state/precision = '" + state.precision + "', expected fp32 or bf16");
  if (state.fp32_engine != "openblas" && state.fp32_engine != "onednn")
    return local.set('D', where + "/state/fp32_engine = '" + state.fp32_engine + "', expected openblas or onednn");
}

}  // namespace

TrainState load_checkpoint(const std::string& path, ParamStore& store, const Config& cfg, const Comm& comm) {
  h5::silence();
  const std::string where = "checkpoint " + path + ": ";
  Failure local;
  {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) local.set('D', where + "file not found");
    else if (!h5::is_hdf5(path)) local.set('D', where + "not an HDF5 file");
    else if (store.ep_size() != comm.ep_size() || store.ep_rank() != comm.ep_rank())
      local.set('E', where + "ParamStore was built for EP " + std::to_string(store.ep_size()) +
                         ", the process grid has EP " + std::to_string(comm.ep_size()));
  }
  if (Failure f = agree(comm, local)) raise(f);

  h5::Handle fapl = mpio_fapl(comm);
  h5::Handle file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl));
  if (!file.valid()) local.set('D', where + "cannot open (truncated or corrupt HDF5 file)" + h5::detail_suffix());
  if (Failure f = agree(comm, local)) {
    file.close();
    raise(f);
  }

  TrainState state;
  int64_t version = 0;
  // Validate everything before touching `store`.
  check_state(file, where, cfg, state, version, local);
  if (!local) {
    for (const ParamInfo& p : store.params()) {
      for (const char* g : kGroups) {
        const std::string ds_name = std::string(g) + "/" + p.name;
        if (!h5::exists(file, ds_name)) {
          local.set('D', where + "dataset " + ds_name + " missing" + h5::detail_suffix());
          break;
        }
        h5::Handle ds = h5::dataset(H5Dopen2(file, ds_name.c_str(), H5P_DEFAULT));
        std::vector<hsize_t> d = ds.valid() ? h5::dims(ds) : std::vector<hsize_t>{};
        std::vector<hsize_t> want(p.global_shape.begin(), p.global_shape.end());
        h5::Handle t = h5::type(ds.valid() ? H5Dget_type(ds) : H5I_INVALID_HID);
        if (d != want || !t.valid() || H5Tget_class(t) != H5T_FLOAT) {
          auto fmt = [](const std::vector<hsize_t>& v) {
            std::string s = "[";
            for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
            return s + "]";
          };
          local.set('D', where + "dataset " + ds_name + " has shape " + fmt(d) + ", expected float " + fmt(want) +
                             h5::detail_suffix());
          break;
        }
        if (version >= 2 && !has_fletcher32(ds)) {
          local.set('D', where + "tensor " + ds_name + " has no checksum, which format_version " +
                             std::to_string(version) + " requires");
          break;
        }
      }
      if (local) break;
    }
  }
  // Buffers exist from format_version 3 on; each one the model declares must be there.
  if (!local && version >= 3) {
    for (const BufferInfo& b : store.buffers()) {
      const std::string ds_name = std::string(hl::kCkptBuffers) + "/" + b.name;
      if (!h5::exists(file, ds_name)) {
        local.set('D', where + "dataset " + ds_name + " missing" + h5::detail_suffix());
        break;
      }
      h5::Handle ds = h5::dataset(H5Dopen2(file, ds_name.c_str(), H5P_DEFAULT));
      const std::vector<hsize_t> d = ds.valid() ? h5::dims(ds) : std::vector<hsize_t>{};
      const std::vector<hsize_t> want(b.shape.begin(), b.shape.end());
      h5::Handle t = h5::type(ds.valid() ? H5Dget_type(ds) : H5I_INVALID_HID);
      if (d != want || !t.valid() || H5Tget_class(t) != H5T_FLOAT) {
        local.set('D', where + "dataset " + ds_name + " has another shape or type than the model's buffer" +
                           h5::detail_suffix());
        break;
      }
      if (!has_fletcher32(ds)) {
        local.set('D', where + "tensor " + ds_name + " has no checksum, which format_version " +
                           std::to_string(version) + " requires");
        break;
      }
    }
  }
  if (Failure f = agree(comm, local)) {
    file.close();
    raise(f);
  }
  if (version < 2 && comm.rank() == 0) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true))
      log::warn("checkpoint %s has format_version %lld: written before checkpoints had checksums, so its tensors "
                "cannot be verified (the next checkpoint will have them)",
                path.c_str(), (long long)version);
  }

  // Read this rank's rows of every tensor (independent transfers: each rank
  // reads exactly what it holds, whatever EP the file was written with).
  // HDF5 verifies each chunk's Fletcher32 checksum as it reads it. Each
  // tensor reaches the store (copy_from_host) only once it was read whole.
  Backend& be = store.backend();
  std::vector<float> host = staging_for(store);
  for (const ParamInfo& p : store.params()) {
    std::vector<hsize_t> shape(p.global_shape.begin(), p.global_shape.end());
    float* bufs[3] = {store.params(p.cls).data() + p.offset, store.moments_m(p.cls).data() + p.offset,
                      store.moments_v(p.cls).data() + p.offset};
    for (int k = 0; k < 3 && !local; ++k) {
      const std::string ds_name = std::string(kGroups[k]) + "/" + p.name;
      h5::Handle ds = h5::dataset(H5Dopen2(file, ds_name.c_str(), H5P_DEFAULT));
      std::string d = ds.valid() ? "" : h5::detail();
      if (ds.valid() &&
          rows_io(false, ds, shape, p.row0, p.local_rows, p.row_elems(), host.data(), H5P_DEFAULT, true, &d)) {
        be.copy_from_host(bufs[k], host.data(), p.local_count * int64_t(sizeof(float)));
        continue;
      }
      local.set('D', where + tensor_read_failure(ds_name, d));
    }
  }
  // Buffers: every rank reads the whole tensor (they are identical on all
  // ranks). A checkpoint from before buffers existed (format_version < 3)
  // was written when they were implicitly zero: they restart at zero.
  for (const BufferInfo& b : store.buffers()) {
    float* buf = store.buffer(b.name);
    if (version < 3) {
      be.fill_zero(buf, b.count);
      continue;
    }
    if (local) break;
    const std::string ds_name = std::string(hl::kCkptBuffers) + "/" + b.name;
    const std::vector<hsize_t> shape(b.shape.begin(), b.shape.end());
    const int64_t rows = b.shape.empty() ? 1 : b.shape[0];
    h5::Handle ds = h5::dataset(H5Dopen2(file, ds_name.c_str(), H5P_DEFAULT));
    std::string d = ds.valid() ? "" : h5::detail();
    if (ds.valid() &&
        rows_io(false, ds, shape, 0, rows, rows ? b.count / rows : 0, host.data(), H5P_DEFAULT, true, &d)) {
      be.copy_from_host(buf, host.data(), b.count * int64_t(sizeof(float)));
      continue;
    }
    local.set('D', where + tensor_read_failure(ds_name, d));
  }
  file.close();
  if (Failure f = agree(comm, local)) raise(f);
  return state;
}

std::map<int64_t, std::string> checkpoint_files(const std::string& run_dir) {
  const std::string dir = run_dir + "/checkpoints";
  std::map<int64_t, std::string> out;
  for (const auto& [step, name] : list_checkpoints(dir, false)) out[step] = dir + "/" + name;
  return out;
}

}  // namespace finemoe
