#!/usr/bin/env bash
# slurm.study: scripts/study.sh --slurm on a small spec: moe-sweep writes the
# array, study.sh submits it with sbatch, waits for it, checks every run
# completed, and fits (both fits' fit.json exist and name the runs).
#   test_study_slurm.sh STATE_DIR WORK_DIR SOURCE_DIR BIN_DIR ANALYZE_BIN_DIR
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; SRC=$3; BIN=$4; ABIN=$5
rm -rf "$WORK"; mkdir -p "$WORK/bin"
for b in "$BIN/moe-sweep" "$BIN/moe-train" "$ABIN/moe-analyze"; do ln -s "$b" "$WORK/bin/"; done
# 2 sizes x G {1, 4} x 2 budgets: 8 short runs, enough for the fits to run.
cat > "$WORK/spec.ini" <<INI
[sweep]
name = sl
n_blocks = 1, 2
aspect_ratio = 32
granularity = 1, 4
experts = 4
tokens = 20000, 40000
[model]
head_dim = 32
seq_len = 64
vocab_size = 256
[moe]
group_size = 256
[train]
batch_size = 16
log_every = 5
eval_every = 0
final_eval_tokens = 4096
INI
export OMP_NUM_THREADS=1
FINEMOE_BIN_DIR=$WORK/bin timeout 600 bash "$SRC/scripts/study.sh" --slurm --spec "$WORK/spec.ini" \
  --runs "$WORK/runs" --docs none --bootstrap 4 --no-build > "$WORK/study.log" 2>&1
rc=$?
cat "$WORK/study.log"
[ "$rc" = 0 ] || fail "scripts/study.sh --slurm exited $rc"
grep -q "Slurm array job [0-9]* submitted" "$WORK/study.log" || fail "no array job submitted"
n=$(($(wc -l < "$WORK/runs/sweep.tsv") - 1))
[ "$n" = 8 ] || fail "expected 8 runs, got $n"
for d in "$WORK"/runs/sl-*/; do
  [ "$(h5_attr "$d/metrics.h5" status)" = completed ] || fail "$d not completed"
done
for fit in free-c fixed-c; do
  j=$WORK/runs/analysis/$fit/fit.json
  [ -f "$j" ] || fail "no $j"
  [ "$(grep -c '"name": "sl-L' "$j")" = 8 ] || fail "$j does not list the 8 runs"
done
grep -q '"c_fixed": true' "$WORK/runs/analysis/fixed-c/fit.json" || fail "the fixed-c fit did not fix c"
echo "PASS: study.sh --slurm trained 8 runs as an array and fitted them twice"
