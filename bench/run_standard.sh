#!/usr/bin/env bash
# Runs the standard benchmark set of issue 9 with moe-bench and prints a table
# of ratios against the targets:
#   dense d512 x 8 blocks; MoE E=8 at G = 1, 4, 16 (equal active FLOPs), expert
#   choice and token choice; seq 256; fp32 and bf16 (bf16 only where available).
#
# Usage: bench/run_standard.sh [MOE_BENCH_BINARY] [OUT.jsonl]
#   env STEPS (default 3), WARMUP (1), BATCH (4 sequences = 1024 tokens/step),
#   PRECISIONS ("fp32 bf16"), THREADS (0 = all cores), TUNED (1).
# Runs in the environment it is given (what a user gets: no OMP_* or OPENBLAS_*
# set by this script). TUNED=1 then runs the set again with
# OMP_WAIT_POLICY=passive (the old tuning, into OUT with _tuned before .jsonl)
# and table.py prints default/tuned per config: with one thread pool (the
# OpenMP OpenBLAS, see INSTALL) the ratio should stay ~1.
# Scaled down: batch 4 x 256 tokens instead of the paper's 2048 x 256 so that
# the whole set (14 runs) takes about 3-5 minutes on a 2-core machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/release/moe-bench}"
out="${2:-bench_$(date +%Y%m%d_%H%M%S).jsonl}"
steps="${STEPS:-3}"
warmup="${WARMUP:-1}"
batch="${BATCH:-4}"
threads="${THREADS:-0}"
precisions="${PRECISIONS:-fp32 bf16}"
tuned="${TUNED:-1}"
[ -x "$bin" ] || { echo "moe-bench not found at '$bin' (pass its path as the first argument)" >&2; exit 2; }

run() {  # label config precision [extra args]
  local label="$1" cfg="$2" prec="$3"
  shift 3
  echo "== $label $prec" >&2
  if ! "$bin" --config "$cfg" --train.precision "$prec" --train.batch_size "$batch" --train.threads "$threads" \
      --steps "$steps" --warmup "$warmup" --json-out "$out" "$@" > /dev/null; then
    echo "   (failed: $label $prec)" >&2
  fi
}

standard_set() {
  for prec in $precisions; do
    if [ "$prec" = bf16 ] && ! "$bin" --config "$here/configs/dense_d512.ini" --train.precision bf16 --gemm-only \
        --peak-seconds 0.01 > /dev/null 2>&1; then
      echo "bf16 not available on this machine: skipping bf16 runs" >&2
      continue
    fi
    run dense "$here/configs/dense_d512.ini" "$prec"
    for routing in expert_choice token_choice; do
      for G in 1 4 16; do
        run "moe_g${G}_${routing}" "$here/configs/moe_e8_g$G.ini" "$prec" --moe.routing "$routing"
      done
    done
  done
}

echo "== default environment (OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset})" >&2
standard_set
if [ "$tuned" = 1 ] && [ -z "${OMP_WAIT_POLICY:-}" ]; then
  default_out="$out"
  out="${default_out%.jsonl}_tuned.jsonl"
  echo "== tuned environment (OMP_WAIT_POLICY=passive), for comparison" >&2
  (export OMP_WAIT_POLICY=passive; standard_set)
  python3 "$here/table.py" "$default_out" "$out"
  echo "raw results: $default_out (default) and $out (tuned)" >&2
else
  python3 "$here/table.py" "$out"
  echo "raw results: $out" >&2
fi
