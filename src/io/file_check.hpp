// Can this path be opened as a data file at all? Asked before any HDF5 call,
// because HDF5 would block forever opening a FIFO, and reports "permission
// denied" and "corrupt" alike as a failed open. The answer names the OS reason
// so that a caller can tell "fix the permissions" (exit 1, file untouched)
// from "the file is damaged" (exit 3, or move it aside).
#pragma once
#include <cstdint>
#include <string>

namespace finemoe::io {

enum class FileProblem {
  none,         // a regular file the process may open as asked
  missing,      // no such file (ENOENT)
  not_regular,  // a directory, FIFO, socket or device: never opened (a FIFO blocks)
  no_access,    // the OS refuses the open (EACCES, EPERM, EROFS, ...)
};

struct FileCheck {
  FileProblem problem = FileProblem::none;
  std::string reason;  // e.g. "is a FIFO, not a regular file", "Permission denied"; "" when none
  int64_t size = 0;    // bytes, when a regular file
};

// Follows symlinks. for_write: also checks the file can be opened read-write.
// The test open uses O_NONBLOCK, so even a FIFO swapped in after the stat()
// never blocks.
FileCheck check_regular_file(const std::string& path, bool for_write);

}  // namespace finemoe::io
