// Scaling-law forms and published coefficient sets.
//
//   fine-grained law   L(N, D, G) = c + (g / G^γ + a) / N^α + b / D^β
//   Chinchilla form    L(N, D)    = c + a / N^α + b / D^β        (g = 0)
//
// One struct carries both: a Chinchilla/dense law is a Law with g = 0.
#pragma once
#include <string>
#include <vector>

namespace finemoe::analysis {

struct Law {
  double a = 0, alpha = 0, b = 0, beta = 0, g = 0, gamma = 0, c = 0;
  double loss(double N, double D, double G = 1.0) const;
  bool has_granularity() const { return g != 0.0; }
};

// SCIENCE.md, E = 64. The more-digit set (c fixed at 0.472) reproduces Table 2
// and is what `--law paper` means; `--law paper-rounded` is Table 1's set.
Law paper_law();
Law paper_law_rounded();
// The paper's dense fit (no G term); dense compute is F = 6·N·D.
Law paper_dense_law();

// "paper" | "paper-rounded" | "paper-dense" |
// "a=18.1,alpha=0.115,b=30.8,beta=0.147,g=2.1,gamma=0.58,c=0.47"
// (keys missing from a list default to 0). Throws ConfigError naming `what`.
Law parse_law(const std::string& spec, const std::string& what);

// Names and values in a fixed order (JSON, CSV, intervals).
std::vector<std::string> law_param_names();
std::vector<double> law_values(const Law& l);
Law law_from_values(const std::vector<double>& v);
std::string law_to_string(const Law& l);

}  // namespace finemoe::analysis
