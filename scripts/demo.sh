#!/usr/bin/env bash
# Quick start, command 1: set up a fresh Debian 12 machine, build, train a tiny
# sweep (several sizes and granularities) on the embedded synthetic corpus,
# then fit the scaling law over it. Results: runs/demo/ and runs/demo/analysis/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
bash scripts/build.sh release
BIN=build/release
RUNS="${1:-runs/demo}"
echo "== 1/3 expanding the demo sweep (input/demo-sweep.ini) into $RUNS"
"$BIN/moe-sweep" --spec input/demo-sweep.ini --out "$RUNS"
echo "== 2/3 training every run of the sweep (rerun to resume; finished runs are skipped)"
MOE_TRAIN="$BIN/moe-train" bash jobs/run_local.sh "$RUNS"
echo "== 3/3 fitting L(N, D, G) over the runs"
# c fixed at the corpus entropy rate: see input/demo-sweep.ini
"$BIN/moe-analyze" "$RUNS" --out "$RUNS/analysis" --bootstrap 200 --fix-c entropy --fix-gamma profile
echo "demo done: see $RUNS/analysis/report.md"
