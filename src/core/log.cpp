#include "finemoe/log.hpp"

#include <cstdarg>

namespace finemoe::log {
namespace {
int g_rank = 0;
bool g_quiet = false;

void vprint(FILE* f, const char* prefix, const char* fmt, va_list ap) {
  std::fputs(prefix, f);
  std::vfprintf(f, fmt, ap);
  std::fputc('\n', f);
  std::fflush(f);
}
}  // namespace

void set_rank(int r) { g_rank = r; }
int rank() { return g_rank; }
void set_quiet(bool q) { g_quiet = q; }

void info(const char* fmt, ...) {
  if (g_rank != 0 || g_quiet) return;
  va_list ap;
  va_start(ap, fmt);
  vprint(stdout, "", fmt, ap);
  va_end(ap);
}
void warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint(stderr, "warning: ", fmt, ap);
  va_end(ap);
}
void error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint(stderr, "error: ", fmt, ap);
  va_end(ap);
}

}  // namespace finemoe::log
