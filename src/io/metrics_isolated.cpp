// Reading a metrics.h5 of unknown health in a child process.
//
// Why a process and not more checks: a flipped byte in a metrics.h5 can send
// the HDF5 library (1.10) into a segfault while it decodes a variable-length
// string or a B-tree node, or into a loop; no check made before the call can
// rule that out, and a signal handler cannot safely resume. fork() gives the
// read its own address space: the parent sees the child's parts arrive over a
// pipe, then either an end mark (clean), or EOF with the child killed by a
// signal (crash), or nothing before the deadline (the child is killed).
//
// fork() in an MPI process (moe-train rank 0 calls this on resume): the child
// touches no MPI state and leaves with _exit(), which Open MPI supports; on
// kernels before 5.12 with RDMA-registered memory a fork could disturb
// in-flight transfers, and none is in flight at that point (set-up only).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

#include "finemoe/error.hpp"
#include "io/file_check.hpp"
#include "io/metrics_internal.hpp"

namespace finemoe {
namespace {

using metrics_detail::PartReader;

// ---- wire format: tag byte + payload; the parent stops at a truncated part --

enum Tag : char { kVersion = 'V', kTrain = 'T', kEval = 'E', kRouting = 'R', kAttrs = 'A', kProblem = 'P', kEnd = 'Z' };

struct Out {
  std::string buf;
  void u64(uint64_t v) { buf.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& s) {
    u64(s.size());
    buf += s;
  }
  template <typename T>
  void vec(const std::vector<T>& v) {
    u64(v.size());
    buf.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
};

struct In {
  const std::string& buf;
  size_t pos = 0;
  bool ok = true;
  bool take(void* dst, size_t n) {
    if (!ok || buf.size() - pos < n) return ok = false;
    if (n) std::memcpy(dst, buf.data() + pos, n);  // an empty vector's data() may be null
    pos += n;
    return true;
  }
  uint64_t u64() {
    uint64_t v = 0;
    take(&v, sizeof v);
    return v;
  }
  std::string str() {
    const uint64_t n = u64();
    if (!ok || buf.size() - pos < n) {
      ok = false;
      return {};
    }
    std::string s = buf.substr(pos, n);
    pos += n;
    return s;
  }
  template <typename T>
  std::vector<T> vec() {
    const uint64_t n = u64();
    if (!ok || (buf.size() - pos) / sizeof(T) < n) {
      ok = false;
      return {};
    }
    std::vector<T> v(n);
    take(v.data(), n * sizeof(T));
    return v;
  }
};

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// The child: read part by part, send each as soon as it is read. Attributes
// last: their variable-length strings are where damaged files crash HDF5.
[[noreturn]] void child_main(const std::string& path, int fd, bool routing_values, double timeout_s, pid_t parent) {
  // Never outlive the parent or the deadline, even if the read loops: the
  // child shares the parent's open files (the run-directory lock among them).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(3);  // it died before the prctl
  ::signal(SIGALRM, SIG_DFL);
  ::alarm(unsigned(std::ceil(timeout_s)) + 5);
  struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);  // a crash here must not leave a core file
  // The default action for a crash: the parent reports it in one line, so no
  // inherited handler (Open MPI prints a backtrace) may speak for the child.
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
  // Nor may glibc's "free(): invalid pointer" of a crashing read reach the
  // terminal: stdout/stderr go to /dev/null (HDF5's own stack is silenced).
  const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    ::close(null_fd);
  }
  auto send = [&](Out& o) {
    if (!write_all(fd, o.buf)) ::_exit(2);
  };
  auto problem = [&](char part, const std::string& msg) {
    Out o;
    o.buf += char(kProblem);
    o.buf += part;
    o.str(msg);
    send(o);
  };
  try {
    PartReader r(path);
    bool stop = false;
    try {
      Out o;
      const int64_t v = r.format_version();
      o.buf += char(kVersion);
      o.u64(uint64_t(v));
      send(o);
      stop = !metrics_detail::readable_version(v);  // another layout: its rows mean something else
    } catch (const std::exception& e) {
      problem(kVersion, e.what());
    }
    if (!stop) {
      auto part = [&](char tag, auto&& read_and_pack) {
        try {
          Out o;
          o.buf += tag;
          read_and_pack(o);
          send(o);
        } catch (const std::exception& e) {
          problem(tag, e.what());
        }
      };
      part(kTrain, [&](Out& o) {
        RunMetrics m;
        r.read_train(m);
        o.vec(m.train);
      });
      part(kEval, [&](Out& o) {
        RunMetrics m;
        r.read_eval(m);
        o.vec(m.eval);
      });
      part(kRouting, [&](Out& o) {
        RunMetrics m;
        r.read_routing(m);  // read (and so checked) in full either way
        if (!routing_values) {
          m.routing_expert_load.clear();
          m.routing_dropped.clear();
          m.routing_entropy.clear();
          m.routing_balance.clear();
          m.routing_z.clear();
        }
        o.u64(uint64_t(m.routing_blocks));
        o.u64(uint64_t(m.routing_experts));
        o.vec(m.routing_step);
        o.vec(m.routing_expert_load);
        o.vec(m.routing_dropped);
        o.vec(m.routing_entropy);
        o.vec(m.routing_balance);
        o.vec(m.routing_z);
      });
      part(kAttrs, [&](Out& o) {
        RunMetrics m;
        r.read_attrs(m);
        o.u64(m.str_attrs.size());
        for (const auto& [k, v] : m.str_attrs) o.str(k), o.str(v);
        o.u64(m.num_attrs.size());
        for (const auto& [k, v] : m.num_attrs) o.str(k), o.buf.append(reinterpret_cast<const char*>(&v), sizeof v);
      });
    }
  } catch (const std::exception& e) {
    problem('O', e.what());  // could not open at all
  }
  Out end;
  end.buf += char(kEnd);
  send(end);
  ::_exit(0);
}

// Parses what the child sent; returns true if the end mark arrived.
bool parse(const std::string& buf, MetricsSalvage& s, int* parts) {
  In in{buf};
  while (in.pos < buf.size()) {
    char tag = 0;
    if (!in.take(&tag, 1)) return false;
    MetricsSalvage next = s;  // a truncated part changes nothing
    RunMetrics& m = next.metrics;
    switch (tag) {
      case kEnd:
        return true;
      case kVersion:
        next.format_version = int64_t(in.u64());
        break;
      case kTrain:
        m.train = in.vec<TrainRow>();
        next.train_ok = true;
        break;
      case kEval:
        m.eval = in.vec<EvalRow>();
        next.eval_ok = true;
        break;
      case kRouting:
        m.routing_blocks = int64_t(in.u64());
        m.routing_experts = int64_t(in.u64());
        m.routing_step = in.vec<int64_t>();
        m.routing_expert_load = in.vec<int64_t>();
        m.routing_dropped = in.vec<double>();
        m.routing_entropy = in.vec<double>();
        m.routing_balance = in.vec<double>();
        m.routing_z = in.vec<double>();
        next.routing_ok = true;
        break;
      case kAttrs: {
        for (uint64_t n = in.u64(), i = 0; in.ok && i < n; ++i) {
          std::string k = in.str();
          m.str_attrs[k] = in.str();
        }
        for (uint64_t n = in.u64(), i = 0; in.ok && i < n; ++i) {
          std::string k = in.str();
          double v = 0;
          in.take(&v, sizeof v);
          m.num_attrs[k] = v;
        }
        metrics_detail::derive_final_eval(m);
        next.attrs_ok = true;
        break;
      }
      case kProblem: {
        char part = 0;
        in.take(&part, 1);
        const std::string msg = in.str();
        if (next.problem.empty()) next.problem = msg;
        break;
      }
      default:
        return false;
    }
    if (!in.ok) return false;
    if (tag != kProblem && tag != kVersion) ++*parts;
    s = std::move(next);
  }
  return false;
}

}  // namespace

MetricsSalvage salvage_metrics(const std::string& path, double timeout_s, bool routing_values) {
  MetricsSalvage s;
  s.metrics.path = path;
  // Cheap checks in this process: no child for a FIFO or a missing file.
  const io::FileCheck fc = io::check_regular_file(path, false);
  if (fc.problem != io::FileProblem::none) {
    s.problem = "metrics " + path + ": " + fc.reason;
    return s;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error("metrics " + path + ": cannot create a pipe: " + std::strerror(errno));
  std::fflush(nullptr);  // nothing buffered may be written twice
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error("metrics " + path + ": cannot start a reader process: " + std::strerror(err));
  }
  if (pid == 0) {
    ::close(fds[0]);
    child_main(path, fds[1], routing_values, timeout_s, parent);
  }
  ::close(fds[1]);

  std::string buf;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd p = {fds[0], POLLIN, 0};
    const int rc = ::poll(&p, 1, int(std::min<int64_t>(left.count(), 1000)));
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    char chunk[65536];
    const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child finished or died
    buf.append(chunk, size_t(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }

  int parts = 0;
  const bool ended = parse(buf, s, &parts);
  s.metrics.path = path;
  if (timed_out) {
    char t[32];
    std::snprintf(t, sizeof t, "%g", timeout_s);
    s.problem = "metrics " + path + ": reading it did not finish within " + t +
                " s (reader killed): the file is corrupt or its file system hangs";
  } else if (!ended) {
    std::string how = WIFSIGNALED(status) ? std::string("crashed the HDF5 library (") + strsignal(WTERMSIG(status)) + ")"
                                          : "failed (reader exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    s.problem = "metrics " + path + ": reading it " + how + " after " + std::to_string(parts) +
                " of 4 parts: the file is corrupt";
  }
  return s;
}

RunMetrics read_metrics_isolated(const std::string& path, double timeout_s) {
  MetricsSalvage s = salvage_metrics(path, timeout_s);
  if (!s.problem.empty() && s.format_version < 0) throw DataError(s.problem);
  if (!metrics_detail::readable_version(s.format_version))
    throw DataError("metrics " + path + ": format_version " + std::to_string(s.format_version) +
                    ", this build reads " + std::to_string(h5layout::kMetricsOldestReadableVersion) + " to " +
                    std::to_string(h5layout::kMetricsFormatVersion));
  if (!s.problem.empty()) throw DataError(s.problem);
  return std::move(s.metrics);
}

}  // namespace finemoe
