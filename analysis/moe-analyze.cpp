// moe-analyze: scaling-law fits and compute-optimal tables over finished runs.
// Everything lives in the finemoe_analysis library (analyze.cpp), so the
// tests can run the whole program in-process.
#include "analyze.hpp"

int main(int argc, char** argv) { return finemoe::analysis::analyze_main(argc, argv); }
