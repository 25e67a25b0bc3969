#include "finemoe/run_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "finemoe/error.hpp"
#include "finemoe/log.hpp"

namespace finemoe {

RunDirLock::RunDirLock(const std::string& run_dir) : path_(run_dir + "/" + kFileName) {
  // O_CLOEXEC: a child process (the isolated metrics reader is forked, not
  // exec'd, so it still shares the lock; it is short-lived) must not keep the
  // lock past an exec.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
  if (fd_ < 0 && errno == EACCES) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd_ < 0)
    throw Error("run.dir '" + run_dir + "': cannot open the lock file " + path_ + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      char buf[256] = {0};
      const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      std::string holder = n > 0 ? std::string(buf, size_t(n)) : std::string();
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
      ::close(fd_);
      fd_ = -1;
      throw Error("run.dir '" + run_dir + "' is in use by another moe-train (" +
                  (holder.empty() ? std::string("holder unknown") : holder) + "; lock " + path_ +
                  "). Wait for it to finish or stop it; two trainers on one run directory would corrupt it");
    }
    if (err == ENOLCK || err == ENOSYS || err == EOPNOTSUPP || err == EINVAL) {
      log::warn("run.dir '%s': this file system does not support flock (%s); running WITHOUT the run-directory "
                "lock: make sure no other moe-train uses this directory",
                run_dir.c_str(), std::strerror(err));
      ::close(fd_);
      fd_ = -1;
      return;
    }
    ::close(fd_);
    fd_ = -1;
    throw Error("run.dir '" + run_dir + "': cannot lock " + path_ + ": " + std::strerror(err));
  }
  // Who holds it, for the next one's message (best effort: read-only lock
  // files or a full disk just leave it blank).
  char host[256] = "unknown";
  ::gethostname(host, sizeof host - 1);
  char when[64] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  const std::string who = "pid " + std::to_string(::getpid()) + " on host " + host + " since " + when + "\n";
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, who.data(), who.size(), 0) < 0) {
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

RunDirLock& RunDirLock::operator=(RunDirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace finemoe
