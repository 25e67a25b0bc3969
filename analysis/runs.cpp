#include "runs.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <filesystem>
#include <sstream>

#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"
#include "finemoe/h5layout.hpp"

namespace fs = std::filesystem;
namespace hl = finemoe::h5layout;

namespace finemoe::analysis {
namespace {

double need_attr(const RunMetrics& m, const char* name) {
  auto it = m.num_attrs.find(name);
  if (it == m.num_attrs.end()) throw DataError(std::string("attribute '") + name + "' is missing");
  if (!std::isfinite(it->second)) throw DataError(std::string("attribute '") + name + "' is not finite");
  return it->second;
}
double opt_attr(const RunMetrics& m, const char* name, double dflt) {
  auto it = m.num_attrs.find(name);
  return it == m.num_attrs.end() ? dflt : it->second;
}

// The run's moe.routing: the config.moe.routing attribute (every key of the
// resolved config is stored as config.KEY), else the [moe] section of the
// stored config.ini text, else the trainer's default.
std::string routing_of(const RunMetrics& m) {
  auto it = m.str_attrs.find(std::string(hl::kAttrConfigPrefix) + "moe.routing");
  std::string v;
  if (it != m.str_attrs.end()) {
    v = it->second;
  } else if (auto ini = m.str_attrs.find(hl::kAttrConfigIni); ini != m.str_attrs.end()) {
    std::istringstream is(ini->second);
    std::string section;
    for (std::string line; std::getline(is, line);) {
      const size_t a = line.find_first_not_of(" \t\r");
      if (a == std::string::npos || line[a] == '#' || line[a] == ';') continue;
      line = line.substr(a, line.find_last_not_of(" \t\r") - a + 1);
      if (line.front() == '[') {
        section = line.substr(1, line.find(']') - 1);
        continue;
      }
      const size_t eq = line.find('=');
      if (section != "moe" || eq == std::string::npos) continue;
      std::string key = line.substr(0, eq), val = line.substr(eq + 1);
      key.erase(key.find_last_not_of(" \t") + 1);
      val.erase(0, val.find_first_not_of(" \t"));
      if (key == "routing") v = val;
    }
  }
  if (v.empty()) return kExpertChoice;
  if (v != kExpertChoice && v != kTokenChoice)
    throw DataError("moe.routing is '" + v + "', expected " + kExpertChoice + " or " + kTokenChoice);
  return v;
}

// Mean train loss over the K rows ending at row `end` (inclusive).
double window_mean(const RunMetrics& m, int64_t end, int64_t K) {
  double s = 0;
  for (int64_t i = end - K + 1; i <= end; ++i) {
    double l = m.train[i].loss;
    if (!std::isfinite(l)) {
      std::ostringstream os;
      os << "loss is " << l << " at step " << m.train[i].step << " (inside the final-loss window)";
      throw DataError(os.str());
    }
    s += l;
  }
  return s / double(K);
}

}  // namespace

std::string routing_short(const std::string& routing) {
  return routing == kExpertChoice ? "EC" : routing == kTokenChoice ? "TC" : routing;
}

std::vector<FitPoint> RunSet::all_points() const {
  std::vector<FitPoint> out;
  for (const auto& r : runs) out.insert(out.end(), r.points.begin(), r.points.end());
  return out;
}

double RunSet::mean_entropy_rate() const {
  double s = 0;
  int n = 0;
  for (const auto& r : runs)
    if (std::isfinite(r.entropy_rate)) {
      s += r.entropy_rate;
      ++n;
    }
  return n > 0 ? s / n : std::numeric_limits<double>::quiet_NaN();
}

RunInfo run_from_metrics(const RunMetrics& m, const CollectOptions& o) {
  RunInfo r;
  r.path = m.path;
  auto st = m.str_attrs.find(hl::kAttrStatus);
  if (st == m.str_attrs.end()) throw DataError("attribute 'status' is missing");
  r.status = st->second;
  if (r.status != "completed" && !o.include_running)
    throw DataError("status is '" + r.status + "', not 'completed' (unfinished runs are not valid points)");
  r.d_model = need_attr(m, hl::kAttrDModel);
  r.n_blocks = need_attr(m, hl::kAttrNBlocks);
  r.dense = opt_attr(m, hl::kAttrDense, 0.0) != 0.0;
  r.E = r.dense ? 1.0 : need_attr(m, hl::kAttrE);
  r.G = r.dense ? 1.0 : need_attr(m, hl::kAttrG);
  r.cooldown = opt_attr(m, hl::kAttrCooldown, 0.0) != 0.0;
  r.routing = r.dense ? "" : routing_of(m);
  r.entropy_rate = opt_attr(m, hl::kAttrEntropyFloor, std::numeric_limits<double>::quiet_NaN());
  if (r.d_model <= 0 || r.n_blocks <= 0 || r.E <= 0 || r.G <= 0)
    throw DataError("attributes d_model/n_blocks/E/G must be positive");
  r.N = law_N(r.d_model, r.n_blocks, r.E);
  r.N_active = law_N_active(r.d_model, r.n_blocks);
  r.flops_per_token = law_flops_per_token(r.d_model, r.n_blocks, r.E, r.G, r.dense);
  // The file's own N must agree with the shared counting: else it was written
  // with other formulas (or other code) and its points are not comparable.
  auto itN = m.num_attrs.find(hl::kAttrN);
  if (itN != m.num_attrs.end() && std::fabs(itN->second - r.N) > 1e-6 * r.N) {
    std::ostringstream os;
    os << "inconsistent: attribute N = " << itN->second << " but law_N(d_model, n_blocks, E) = " << r.N;
    throw DataError(os.str());
  }
  r.rows = int64_t(m.train.size());
  if (r.rows == 0) throw DataError("no train rows logged");
  r.window = o.final_window > 0 ? std::min<int64_t>(o.final_window, r.rows)
                                : std::max<int64_t>(1, int64_t(std::lround(0.1 * double(r.rows))));
  r.D = double(m.train.back().tokens);
  if (!(r.D > 0)) throw DataError("final token count is not positive");
  const FinalEval& fe = m.final_eval;
  const bool eval_ok = m.has_final_eval && fe.step == m.train.back().step && std::isfinite(fe.loss) && fe.loss > 0;
  if (o.final_from_eval && eval_ok) {
    r.final_loss = fe.loss;
    r.final_stderr = fe.stderr_loss;
    r.final_source = "eval";
  } else {
    r.final_loss = window_mean(m, r.rows - 1, r.window);
    r.final_stderr = std::numeric_limits<double>::quiet_NaN();
    r.final_source = "train";
    if (o.final_from_eval) {
      std::ostringstream os;
      if (m.has_final_eval)
        os << "final evaluation is from step " << fe.step << ", not the last logged step " << m.train.back().step;
      else
        os << "no final evaluation in metrics.h5 (trained before train.final_eval_tokens existed, or with it 0)";
      os << ": final loss = mean of the last " << r.window << " train-batch losses (single-batch noise)";
      r.warning = os.str();
    }
  }
  if (!(r.final_loss > 0)) throw DataError("final loss is not positive");
  r.F = r.flops_per_token * r.D;
  for (const auto& e : m.eval)
    if (std::isfinite(e.loss)) r.eval_tokens.push_back(double(e.tokens)), r.eval_loss.push_back(e.loss);
  if (r.cooldown && o.cooldown_points > 1) {
    for (int k = 1; k < o.cooldown_points; ++k) {
      int64_t end = int64_t(std::lround(double(k) / o.cooldown_points * double(r.rows))) - 1;
      if (end < r.window - 1 || end >= r.rows - 1) continue;
      double D = double(m.train[end].tokens), L = window_mean(m, end, r.window);
      if (D > 0 && L > 0) r.points.push_back(FitPoint{r.N, D, r.G, L, 0, r.flops_per_token * D});
    }
  }
  r.points.push_back(FitPoint{r.N, r.D, r.G, r.final_loss, 0, r.F});
  if (std::isfinite(r.final_stderr) && r.final_stderr > 0) r.points.back().loss_se = r.final_stderr;
  const int64_t stride = std::max<int64_t>(1, r.rows / std::max(1, o.curve_max_points));
  for (int64_t i = 0; i < r.rows; i += stride) {
    if (!std::isfinite(m.train[i].loss)) continue;
    r.curve_tokens.push_back(double(m.train[i].tokens));
    r.curve_loss.push_back(m.train[i].loss);
  }
  return r;
}

RunSet collect_runs(const std::string& dir, const CollectOptions& o) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw DataError("runs directory '" + dir + "' does not exist or is not a directory");
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) throw DataError("cannot read runs directory '" + dir + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    // Also FIFOs, directories, dangling links named metrics.h5: listed, then
    // skipped with their reason by the reader (which never opens them).
    if (it->path().filename() == "metrics.h5") files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  RunSet set;
  for (const auto& f : files) {
    try {
      // In a child process: a file damaged so that the HDF5 library crashes
      // or loops on it costs one skip, never the whole analysis.
      RunMetrics m = read_metrics_isolated(f.string(), o.read_timeout_s);
      RunInfo r = run_from_metrics(m, o);
      r.path = f.string();
      fs::path rel = fs::relative(f.parent_path(), dir, ec);
      r.name = ec || rel.empty() || rel == "." ? f.parent_path().filename().string() : rel.string();
      for (auto& p : r.points) p.group = int(set.runs.size());
      set.runs.push_back(std::move(r));
    } catch (const std::exception& e) {
      // One bad file never stops the analysis: it is listed with its reason.
      set.skipped.push_back({f.string(), e.what()});
    }
  }
  return set;
}

}  // namespace finemoe::analysis
