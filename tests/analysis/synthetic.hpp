// Synthetic (N, D, G, loss) grids drawn from a known law + log-normal noise,
// shared by the recovery tests.
#pragma once
#include <random>
#include <vector>

#include "finemoe/counting.hpp"
#include "fit.hpp"

namespace finemoe::analysis::testing {

struct SynthRun {
  double d_model, n_blocks, G, D, loss;
};

// Shapes d = 64·n_blocks, E = 64: N from 1.4e8 to 8.7e9; D from 2e9 to 3.2e10.
inline std::vector<SynthRun> synthetic_runs(const Law& truth, double noise_sigma, uint64_t seed,
                                            std::vector<double> Gs = {1, 2, 4, 8, 16}) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, noise_sigma);
  std::vector<SynthRun> out;
  for (double nb : {4, 6, 8, 11, 16})
    for (double D : {2e9, 8e9, 3.2e10})
      for (double G : Gs) {
        double N = law_N(64 * nb, nb, 64);
        out.push_back({64 * nb, nb, G, D, truth.loss(N, D, G) * std::exp(noise(rng))});
      }
  return out;
}

inline std::vector<FitPoint> to_points(const std::vector<SynthRun>& runs) {
  std::vector<FitPoint> pts;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    pts.push_back({law_N(r.d_model, r.n_blocks, 64), r.D, r.G, r.loss, int(i)});
  }
  return pts;
}

}  // namespace finemoe::analysis::testing
