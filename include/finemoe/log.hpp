// Minimal logging: only rank 0 prints progress unless `all_ranks` is set.
#pragma once
#include <cstdio>
#include <string>

namespace finemoe::log {

// Set once after MPI is up; before that every process prints.
void set_rank(int rank);
int rank();
void set_quiet(bool quiet);

// printf-style progress line on stdout (rank 0 only), flushed immediately so
// that Slurm logs show progress even when the job is killed.
void info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Warnings and errors go to stderr, from any rank that calls them.
void warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace finemoe::log
