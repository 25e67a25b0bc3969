// Helpers of the checkpoint integrity tests (need HDF5, unlike io_test_util.hpp):
// where each tensor's bytes lie in a checkpoint file, byte flips, file hashes.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "finemoe/params.hpp"
#include "io/h5util.hpp"
#include "io_test_util.hpp"

namespace ckpttest {

// One stored chunk of a tensor: file offset and size of its (filtered) bytes.
struct Extent {
  std::string dataset;  // e.g. "/params/wte"
  uint64_t offset = 0, size = 0;
};

// Every chunk of every tensor (params, moments, buffers) of `store` in the
// checkpoint at `path`.
inline std::vector<Extent> data_extents(const std::string& path, const finemoe::ParamStore& store) {
  namespace h5 = finemoe::h5;
  h5::silence();
  std::vector<Extent> out;
  h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.valid()) return out;
  std::vector<std::string> names;
  for (const auto& p : store.params())
    for (const char* g : {"/params/", "/adam_m/", "/adam_v/"}) names.push_back(g + p.name);
  for (const auto& b : store.buffers()) names.push_back("/buffers/" + b.name);
  for (const std::string& name : names) {
      h5::Handle ds = h5::dataset(H5Dopen2(f, name.c_str(), H5P_DEFAULT));
      h5::Handle sp = h5::space(H5Dget_space(ds));
      hsize_t n = 0;
      if (H5Dget_num_chunks(ds, sp, &n) < 0) continue;
      for (hsize_t i = 0; i < n; ++i) {
        hsize_t off[8];
        unsigned mask = 0;
        haddr_t addr = 0;
        hsize_t size = 0;
        if (H5Dget_chunk_info(ds, sp, i, off, &mask, &addr, &size) >= 0) out.push_back({name, addr, size});
      }
    }
  return out;
}

// A copy of `bytes` with bytes[pos] ^= mask written to `path`.
inline void write_flipped(const std::string& path, std::string bytes, uint64_t pos, unsigned char mask) {
  bytes[pos] = char((unsigned char)bytes[pos] ^ mask);
  iotest::write_file(path, bytes);
}

// FNV-1a of a file's bytes ("" if unreadable): cheap "is it unchanged" check.
inline uint64_t file_hash(const std::string& path) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : iotest::read_file(path)) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Hash of every regular file in dir (name -> hash).
inline std::map<std::string, uint64_t> dir_hashes(const std::string& dir) {
  std::map<std::string, uint64_t> out;
  std::string cmd = "ls -A '" + dir + "' 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  char line[1024];
  while (p && std::fgets(line, sizeof line, p)) {
    std::string n(line);
    while (!n.empty() && n.back() == '\n') n.pop_back();
    out[n] = file_hash(dir + "/" + n);
  }
  if (p) ::pclose(p);
  return out;
}

}  // namespace ckpttest
