// Fit data from any source: a CSV table of runs (--points FILE.csv) becomes
// runs like those read from metrics.h5, and a runs directory can be written
// as such a table (--write-points), so both fit to identical coefficients.
//
// Columns (header line, names case-sensitive, any order, unknown ones ignored):
//   N, D, loss          required; N = the law's N, D tokens, loss nats/token
//   G, E                optional, default 1
//   N_active            optional; default 12 N / (8 E + 4) (the shape relation
//                       of counting.hpp), or N for dense rows
//   F                   optional training FLOPs; default 6 N_active D (router
//                       FLOPs, which need d_model, left out)
//   run                 optional run name; rows with the same name are one run
//                       (bootstrap and holdout move them together; the row
//                       with the largest D is its final point). Default: each
//                       row is its own run, named FILE:LINE
//   weight              optional, > 0, multiplies the row's Huber term
//   dense               optional 0/1: dense rows get the separate dense fit
//   routing             optional expert_choice | token_choice (MoE rows;
//                       default expert_choice; ignored on dense rows)
//   loss_se             optional, >= 0: standard error of loss (0: unknown)
//   n_blocks, d_model   optional, together: the shape; N must then equal
//                       law_N(d_model, n_blocks, E), and the default F
//                       includes the router (law_flops_per_token)
// Lines starting with '#' and blank lines are skipped; fields are not quoted.
#pragma once
#include <string>

#include "runs.hpp"

namespace finemoe::analysis {

// Throws DataError (exit 3) naming the file, line and column: unreadable file,
// missing or duplicate column names, a non-number, NaN/Inf, a non-positive
// value, a run whose rows disagree on N, G, E or dense, no data rows.
RunSet read_points_csv(const std::string& path);

// Every fit point of `runs` as a CSV that read_points_csv reads back to the
// same points (%.17g). Throws Error when the file cannot be written.
void write_points_csv(const RunSet& runs, const std::string& path);

// Appends `more` to `into`, renumbering point groups to run indices.
void append_runs(RunSet& into, RunSet more);

}  // namespace finemoe::analysis
