// Errors and exit codes shared by every executable.
//
// Every user-facing failure is a finemoe::Error carrying a message that names
// the bad key, file or value. main() catches it, prints it once, and exits with
// the code below so that job scripts can tell what happened.
#pragma once
#include <stdexcept>
#include <string>

namespace finemoe {

// Exit codes are part of the public interface (documented in README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,        // runtime failure (I/O, MPI, internal)
  kExitUsage = 2,          // bad command line or config: fix the input, don't retry
  kExitDataError = 3,      // unreadable/corrupt data or checkpoint
  kExitDiverged = 4,       // NaN/Inf in loss or gradients; last good checkpoint kept
  kExitPreempted = 75,     // EX_TEMPFAIL: checkpointed on a signal; requeue and resume
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, int exit_code = kExitFailure)
      : std::runtime_error(msg), code_(exit_code) {}
  int exit_code() const { return code_; }

 private:
  int code_;
};

// Bad configuration value or key: message names the key.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& msg) : Error(msg, kExitUsage) {}
};

// Bad input file (shard, checkpoint, metrics): message names the file.
class DataError : public Error {
 public:
  explicit DataError(const std::string& msg) : Error(msg, kExitDataError) {}
};

// An error that every rank raised together (after agreeing on it), so it can
// be printed once by rank 0 and every rank can exit normally with its code.
// ConfigError is always of this kind (every rank validates the same config).
class CollectiveError : public Error {
 public:
  CollectiveError(const std::string& msg, int exit_code) : Error(msg, exit_code) {}
};

}  // namespace finemoe
