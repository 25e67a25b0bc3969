#!/usr/bin/env bash
# Quick start, command 2: set up a fresh Debian 12 machine, build, and run the
# whole test suite (unit, MPI with 1/2/4 ranks, integration, local Slurm).
# Exit status is ctest's: non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Open MPI refuses root without these; tests oversubscribe 4 ranks on 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Tests run several MPI ranks per core: one thread each, and idle threads that
# sleep instead of spinning (spinning threads halve throughput when oversubscribed).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
bash scripts/build.sh ci
ctest --preset ci -j "${FINEMOE_TEST_JOBS:-2}"
