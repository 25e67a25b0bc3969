// One trainer per run directory.
//
// Two moe-train processes on one run directory would interleave rows in
// metrics.h5 and race on checkpoints/LATEST. RunDirLock holds an exclusive
// flock() on RUN_DIR/.lock for the life of the trainer: the kernel releases it
// when the process ends in any way (also kill -9 or a node reboot on a local
// disk), so a stale lock file never blocks a rerun. The file holds the
// holder's "pid PID on host HOST since TIME" for the refusal message; it is
// never deleted (deleting would let a third process lock a fresh inode while
// the second still holds the old one).
//
// Only rank 0 takes it (the trainer runs it through run_collectively, so the
// other ranks learn the outcome and nobody waits in a collective).
// File systems without flock (ENOLCK/ENOSYS/EOPNOTSUPP, e.g. Lustre mounted
// without -o flock): a warning, and the run goes on unlocked.
#pragma once
#include <string>

namespace finemoe {

class RunDirLock {
 public:
  RunDirLock() = default;
  // Takes the lock or throws Error (exit 1) naming the directory and, when
  // the lock file says, the holder's pid and host.
  explicit RunDirLock(const std::string& run_dir);
  ~RunDirLock();
  RunDirLock(RunDirLock&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  RunDirLock& operator=(RunDirLock&& o) noexcept;
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  bool held() const { return fd_ >= 0; }
  static constexpr const char* kFileName = ".lock";

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace finemoe
