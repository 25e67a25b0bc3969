// Guardrails: machine-readable flags on a fitted law that a reader must see
// before trusting a number (terminal summary, report.md, fit.json).
//
//   bound           a coefficient sits on a box bound of the LM solver
//                   (|log a|, |log b|, |log g| = 30; alpha, beta in [1e-4, 3];
//                   gamma in [-1, 3]), within 1e-3
//   prior           refitting with lambda = 0 (full start grid) moves the
//                   coefficient by more than 1 %: the L2 prior, not the data,
//                   sets it
//   not_identified  its bootstrap 95 % interval spans more than a decade
//                   (a, b, g, c: hi/lo > 10) or more than +-50 % of the value
//                   (alpha, beta, gamma)
//   bimodal         its bootstrap distribution (log values for a, b, g, c) has
//                   Sarle's bimodality coefficient (skew^2 + 1) / (excess
//                   kurtosis + 3 (n-1)^2 / ((n-2)(n-3))) above 5/9, the value
//                   of a uniform distribution (needs >= 20 refits)
//   below_floor     c is below the data's entropy rate (data_entropy_rate,
//                   the true irreducible loss) beyond its interval: the upper
//                   end of its bootstrap interval (or c itself without a
//                   bootstrap) is below the rate
//   misfit          (param "fit") the law misses the points by more than their
//                   own noise: RMSE above 2x the median standard error of the
//                   points' final losses (final evaluation; needs >= 5 points
//                   that carry one). The residuals are then structure, not
//                   noise (e.g. runs before the power-law regime); the message
//                   gives the mean residual per token budget D so the trend is
//                   visible. The eval standard error is a lower bound on a
//                   run's noise (seed-to-seed variance adds to it): the 2x
//                   margin keeps the flag for misfits well above that.
#pragma once
#include <string>
#include <vector>

#include "bootstrap.hpp"
#include "fit.hpp"

namespace finemoe::analysis {

struct Flag {
  std::string kind;     // bound | prior | not_identified | bimodal | below_floor | misfit
  std::string param;    // the coefficient (a, alpha, b, beta, g, gamma, c), or "fit"
  std::string message;  // one sentence with the numbers
};

struct Guardrails {
  std::vector<Flag> flags;
  std::vector<std::string> suggestions;  // what runs or options would identify the flagged coefficients
  bool prior_checked = false;            // the lambda = 0 refit ran
  FitResult no_prior;                    // that refit
};

// Sarle's bimodality coefficient of v (NaN for fewer than 4 values).
double bimodality_coefficient(const std::vector<double>& v);

// entropy_rate: NaN when no run knows it.
Guardrails check_fit(const std::vector<FitPoint>& pts, const FitOptions& fo, const FitResult& fit,
                     const BootstrapResult* boot, double entropy_rate);

}  // namespace finemoe::analysis
