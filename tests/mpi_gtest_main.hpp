// main() of a GoogleTest binary that runs under mpirun: every rank runs the
// tests, rank 0 alone prints the report, and the exit status is the worst
// rank's (so a failure on any rank fails the CTest entry).
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include "finemoe/comm.hpp"

int main(int argc, char** argv) {
  finemoe::Comm::init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one report, from rank 0
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int all = 0;
  MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  finemoe::Comm::finalize();
  return all;
}
