#include "finemoe/memory_check.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>

#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"

namespace finemoe {
namespace {
std::string bytes_text(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024.0 && u < 6) {
    b /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s", b, unit[u]);
  return buf;
}
}  // namespace

uint64_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line)) {
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kib) == 1) return uint64_t(kib) * 1024u;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

void check_memory_fits(const Config& c, int world_size, int ranks_on_node, uint64_t available) {
  if (available == 0) return;
  const int world = world_size < 1 ? 1 : world_size, local = ranks_on_node < 1 ? 1 : ranks_on_node;
  const double tokens = double(c.train.batch_size / world) * double(c.model.seq_len);
  const MemoryEstimate m = train_memory_bytes(c.shape(), c.n_heads(), tokens, c.parallel.expert_parallel);
  const double need = m.total() * double(local);
  if (need <= double(available)) return;
  std::ostringstream os;
  os << "config keys 'model.d_model' = " << c.model.d_model << ", 'model.n_blocks' = " << c.model.n_blocks;
  if (!c.dense()) os << ", 'moe.experts' = " << c.moe.experts << ", 'moe.granularity' = " << c.moe.granularity;
  os << ", 'model.vocab_size' = " << c.model.vocab_size << ", 'train.batch_size' = " << c.train.batch_size
     << " and 'model.seq_len' = " << c.model.seq_len << " need an estimated " << bytes_text(m.total())
     << " per rank (params, grads and AdamW moments " << bytes_text(m.param_bytes) << ", activations "
     << bytes_text(m.activation_bytes) << ")";
  if (local > 1) os << " x " << local << " ranks on this node = " << bytes_text(need);
  os << ", but only " << bytes_text(double(available)) << " is available (" << std::fixed << std::setprecision(0) << need
     << " > " << available << " bytes); make the model or the batch smaller";
  if (!c.dense() && c.parallel.expert_parallel < world)
    os << ", or split the experts over more ranks ('parallel.expert_parallel')";
  throw ConfigError(os.str());
}

}  // namespace finemoe
