// The common frame of the single-process executables' main() (moe-bench,
// moe-data, moe-sweep): run the body, turn a finemoe::Error into "NAME: error:
// MESSAGE" on stderr and its exit code (error.hpp), any other std::exception
// into the same line and exit code 1; anything else is not caught. moe-train
// does not use it (under MPI one rank's error must abort every rank: see
// src/apps/moe-train.cpp), nor does moe-analyze (analyze_main, analysis/analyze.cpp,
// prints "moe-analyze: MESSAGE" with the same exit codes).
#pragma once
#include <functional>

namespace finemoe {

int run_app(const char* name, const std::function<int()>& body);

}  // namespace finemoe
