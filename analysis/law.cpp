#include "law.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "finemoe/error.hpp"

namespace finemoe::analysis {

double Law::loss(double N, double D, double G) const {
  return c + (g / std::pow(G, gamma) + a) / std::pow(N, alpha) + b / std::pow(D, beta);
}

Law paper_law() { return Law{18.0712, 0.1146, 30.8082, 0.1465, 2.0760, 0.5843, 0.472}; }
Law paper_law_rounded() { return Law{18.1, 0.115, 30.8, 0.147, 2.1, 0.58, 0.47}; }
Law paper_dense_law() { return Law{16.3, 0.126, 26.7, 0.127, 0.0, 0.0, 0.47}; }

std::vector<std::string> law_param_names() { return {"a", "alpha", "b", "beta", "g", "gamma", "c"}; }
std::vector<double> law_values(const Law& l) { return {l.a, l.alpha, l.b, l.beta, l.g, l.gamma, l.c}; }
Law law_from_values(const std::vector<double>& v) { return Law{v[0], v[1], v[2], v[3], v[4], v[5], v[6]}; }

std::string law_to_string(const Law& l) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "a=%.6g,alpha=%.6g,b=%.6g,beta=%.6g,g=%.6g,gamma=%.6g,c=%.6g", l.a, l.alpha,
                l.b, l.beta, l.g, l.gamma, l.c);
  return buf;
}

Law parse_law(const std::string& spec, const std::string& what) {
  if (spec == "paper") return paper_law();
  if (spec == "paper-rounded") return paper_law_rounded();
  if (spec == "paper-dense") return paper_dense_law();
  Law l;
  const auto names = law_param_names();
  std::vector<double> v(names.size(), 0.0);
  std::vector<bool> seen(names.size(), false);
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw ConfigError(what + ": expected 'paper', 'paper-rounded', 'paper-dense' or key=value list, got '" +
                        spec + "'");
    std::string k = item.substr(0, eq), val = item.substr(eq + 1);
    size_t i = 0;
    while (i < names.size() && names[i] != k) ++i;
    if (i == names.size())
      throw ConfigError(what + ": unknown coefficient '" + k + "' (use a, alpha, b, beta, g, gamma, c)");
    char* end = nullptr;
    errno = 0;
    double x = std::strtod(val.c_str(), &end);
    if (val.empty() || *end != '\0' || !std::isfinite(x))
      throw ConfigError(what + ": coefficient '" + k + "' is not a number: '" + val + "'");
    v[i] = x;
    seen[i] = true;
  }
  for (size_t i : {0u, 1u, 2u, 3u, 6u})
    if (!seen[i]) throw ConfigError(what + ": coefficient '" + names[i] + "' is missing in '" + spec + "'");
  return law_from_values(v);
}

}  // namespace finemoe::analysis
