#include "io/file_check.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace finemoe::io {
namespace {
const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a plain file";
}
}  // namespace

FileCheck check_regular_file(const std::string& path, bool for_write) {
  FileCheck out;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    out.problem = err == ENOENT ? FileProblem::missing : FileProblem::no_access;
    out.reason = err == ENOENT ? "file not found" : std::strerror(err);
    return out;
  }
  if (!S_ISREG(st.st_mode)) {
    out.problem = FileProblem::not_regular;
    out.reason = std::string("is ") + kind_of(st.st_mode) + ", not a regular file";
    return out;
  }
  out.size = int64_t(st.st_size);
  const int fd = ::open(path.c_str(), (for_write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    out.problem = FileProblem::no_access;
    out.reason = std::string("cannot open for ") + (for_write ? "writing" : "reading") + ": " + std::strerror(errno);
    return out;
  }
  ::close(fd);
  return out;
}

}  // namespace finemoe::io
