#include "points.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <vector>

#include "finemoe/counting.hpp"
#include "finemoe/error.hpp"

namespace finemoe::analysis {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string f; std::getline(ss, f, ',');) out.push_back(trim(f));
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

}  // namespace

RunSet read_points_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw DataError("--points " + path + ": cannot open the file");
  auto fail = [&](int line, const std::string& what) -> DataError {
    return DataError("--points " + path + (line > 0 ? ":" + std::to_string(line) : "") + ": " + what);
  };
  std::string text;
  int lineno = 0;
  std::vector<std::string> head;
  while (std::getline(f, text)) {
    ++lineno;
    const std::string t = trim(text);
    if (t.empty() || t[0] == '#') continue;
    head = split(t);
    break;
  }
  if (head.empty()) throw fail(0, "no header line (expected columns N, D, loss)");
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < head.size(); ++i) {
    if (head[i].empty()) throw fail(lineno, "column " + std::to_string(i + 1) + " of the header has no name");
    if (!col.emplace(head[i], i).second) throw fail(lineno, "duplicate column name '" + head[i] + "'");
  }
  for (const char* need : {"N", "D", "loss"})
    if (!col.count(need))
      throw fail(lineno, std::string("required column '") + need + "' missing (header: " + trim(text) + ")");
  auto has = [&](const char* c) { return col.count(c) > 0; };

  struct Row {
    std::string run, routing;
    double N, D, loss, G, E, N_active, F, weight, loss_se, n_blocks, d_model;
    bool dense;
    int line;
  };
  std::vector<Row> rows;
  while (std::getline(f, text)) {
    ++lineno;
    const std::string t = trim(text);
    if (t.empty() || t[0] == '#') continue;
    const auto v = split(t);
    if (v.size() != head.size())
      throw fail(lineno, std::to_string(v.size()) + " fields, the header has " + std::to_string(head.size()));
    auto num = [&](const char* c, double dflt, bool positive = true) {
      if (!has(c)) return dflt;
      const std::string& s = v[col.at(c)];
      char* end = nullptr;
      const double x = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0') throw fail(lineno, std::string("column '") + c + "': '" + s + "' is not a number");
      if (!std::isfinite(x)) throw fail(lineno, std::string("column '") + c + "' is " + s + " (must be finite)");
      if (positive && !(x > 0)) throw fail(lineno, std::string("column '") + c + "' must be > 0, got " + s);
      return x;
    };
    Row r;
    r.line = lineno;
    r.N = num("N", 0);
    r.D = num("D", 0);
    r.loss = num("loss", 0);
    r.G = num("G", 1);
    r.E = num("E", 1);
    const double dense = num("dense", 0, false);
    if (dense != 0 && dense != 1) throw fail(lineno, "column 'dense' must be 0 or 1");
    r.dense = dense == 1;
    // The shape: both columns, or neither (absent or empty: unknown).
    auto given = [&](const char* c) { return has(c) && !v[col.at(c)].empty(); };
    if (given("n_blocks") != given("d_model"))
      throw fail(lineno, "columns 'n_blocks' and 'd_model' go together (both given or both empty)");
    const bool shape = given("n_blocks");
    r.n_blocks = shape ? num("n_blocks", 0) : 0;
    r.d_model = shape ? num("d_model", 0) : 0;
    if (shape) {
      const double N = finemoe::law_N(r.d_model, r.n_blocks, r.dense ? 1 : r.E);
      if (std::fabs(N - r.N) > 1e-6 * N) {
        char b[160];
        std::snprintf(b, sizeof b, "N = %.17g, but n_blocks %g, d_model %g, E %g give N = %.17g", r.N, r.n_blocks,
                      r.d_model, r.E, N);
        throw fail(lineno, b);
      }
    }
    r.N_active = num("N_active", shape ? finemoe::law_N_active(r.d_model, r.n_blocks)
                                 : r.dense ? r.N : 12 * r.N / (8 * r.E + 4));
    r.F = num("F", shape ? finemoe::law_flops_per_token(r.d_model, r.n_blocks, r.E, r.G, r.dense) * r.D
                         : 6 * r.N_active * r.D);
    r.loss_se = num("loss_se", 0, false);
    if (r.loss_se < 0) throw fail(lineno, "column 'loss_se' must be >= 0");
    r.routing = has("routing") ? v[col.at("routing")] : "";
    if (r.routing.empty()) r.routing = kExpertChoice;
    if (r.routing != kExpertChoice && r.routing != kTokenChoice)
      throw fail(lineno, "column 'routing': '" + r.routing + "' is not " + kExpertChoice + " or " + kTokenChoice);
    if (r.dense) r.routing = "";
    r.weight = num("weight", 1);
    r.run = has("run") ? v[col.at("run")] : path + ":" + std::to_string(lineno);
    if (r.run.empty()) throw fail(lineno, "column 'run' is empty");
    rows.push_back(r);
  }
  if (rows.empty()) throw fail(0, "no data rows after the header");

  RunSet set;
  std::map<std::string, size_t> index;  // run name -> position in set.runs (first appearance order)
  for (const Row& r : rows) {
    auto [it, fresh] = index.emplace(r.run, set.runs.size());
    if (fresh) {
      RunInfo ri;
      ri.path = path;
      ri.name = r.run;
      ri.status = "points";
      ri.E = r.E, ri.G = r.G, ri.dense = r.dense, ri.N = r.N, ri.N_active = r.N_active;
      ri.routing = r.routing, ri.n_blocks = r.n_blocks, ri.d_model = r.d_model;
      ri.final_source = "points";
      ri.final_stderr = std::numeric_limits<double>::quiet_NaN();
      ri.entropy_rate = std::numeric_limits<double>::quiet_NaN();
      set.runs.push_back(ri);
    }
    RunInfo& ri = set.runs[it->second];
    if (ri.N != r.N || ri.G != r.G || ri.E != r.E || ri.dense != r.dense || ri.routing != r.routing ||
        ri.n_blocks != r.n_blocks || ri.d_model != r.d_model)
      throw fail(r.line, "run '" + r.run + "' has rows with different N, G, E, dense, routing or shape");
    ri.points.push_back(FitPoint{r.N, r.D, r.G, r.loss, int(it->second), r.F, r.weight, r.loss_se});
    ri.rows++;
  }
  for (RunInfo& ri : set.runs) {
    // The largest-D row is the run's final point (last, as for metrics.h5 runs).
    size_t k = 0;
    for (size_t i = 1; i < ri.points.size(); ++i)
      if (ri.points[i].D > ri.points[k].D) k = i;
    FitPoint last = ri.points[k];
    ri.points.erase(ri.points.begin() + long(k));
    ri.points.push_back(last);
    ri.D = last.D, ri.F = last.F, ri.final_loss = last.loss;
    if (last.loss_se > 0) ri.final_stderr = last.loss_se;
    ri.flops_per_token = last.F / last.D;
  }
  return set;
}

void write_points_csv(const RunSet& runs, const std::string& path) {
  std::ofstream f(path);
  if (!f) throw Error("--write-points: cannot write '" + path + "'");
  f << "run,N,D,loss,G,E,N_active,F,weight,dense,routing,loss_se,n_blocks,d_model\n";
  char buf[512];
  for (const RunInfo& r : runs.runs)
    for (const FitPoint& p : r.points) {
      std::string name = r.name;
      for (char& c : name)
        if (c == ',' || c == '\n') c = ';';
      std::snprintf(buf, sizeof buf, "%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%d,", p.N, p.D, p.loss, p.G,
                    r.E, r.N_active, p.F, p.weight, int(r.dense));
      f << name << ',' << buf << r.routing;
      // A shape only when both are known (runs from metrics.h5; a --points CSV that had them).
      if (r.n_blocks > 0 && r.d_model > 0)
        std::snprintf(buf, sizeof buf, ",%.17g,%.17g,%.17g\n", p.loss_se, r.n_blocks, r.d_model);
      else
        std::snprintf(buf, sizeof buf, ",%.17g,,\n", p.loss_se);
      f << buf;
    }
  if (!f) throw Error("--write-points: error writing '" + path + "'");
}

void append_runs(RunSet& into, RunSet more) {
  for (RunInfo& r : more.runs) {
    for (FitPoint& p : r.points) p.group = int(into.runs.size());
    into.runs.push_back(std::move(r));
  }
  for (auto& s : more.skipped) into.skipped.push_back(std::move(s));
}

}  // namespace finemoe::analysis
