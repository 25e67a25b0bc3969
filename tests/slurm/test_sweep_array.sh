#!/usr/bin/env bash
# slurm.sweep_array: moe-sweep --slurm writes an array script; every task trains
# its run to completion through jobs/train.sbatch; metrics.h5 of every run says
# completed with the step count of the manifest.
#   test_sweep_array.sh STATE_DIR WORK_DIR MOE_SWEEP MOE_TRAIN JOBS_DIR
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; SWEEP=$3; TRAIN=$4; JOBS=$5
rm -rf "$WORK"; mkdir -p "$WORK"
cat > "$WORK/spec.ini" <<INI
[sweep]
name = arr
n_blocks = 1
granularity = 1, 2, 4
tokens = 30000
[model]
seq_len = 64
vocab_size = 256
[moe]
experts = 4
group_size = 256
[train]
batch_size = 16
log_every = 5
eval_tokens = 2048
final_eval_tokens = 2048
INI
export OMP_NUM_THREADS=1
FINEMOE_TRAIN=$TRAIN "$SWEEP" --spec "$WORK/spec.ini" --out "$WORK/runs" --slurm --jobs-dir "$JOBS" || fail "moe-sweep failed"
jid=$(sbatch --parsable --chdir="$WORK" "$WORK/runs/sweep.sbatch") || fail "sbatch failed"
n=0
for i in 0 1 2; do
  st=$(wait_job "${jid}_$i" 300)
  cat "$WORK"/runs/logs/*_"$i".out 2>/dev/null
  [ "$st" = COMPLETED ] || fail "array task $i ended $st"
done
while IFS=$'\t' read -r name _ _ _ _ _ _ steps _; do
  [ "$name" = name ] && continue
  m=$WORK/runs/$name/metrics.h5
  [ "$(h5_attr "$m" status)" = completed ] || fail "$name: status $(h5_attr "$m" status)"
  [ "$(h5_values "$m" /train/step | tail -n1)" = "$steps" ] || fail "$name: last step != manifest steps $steps"
  n=$((n + 1))
done < "$WORK/runs/sweep.tsv"
[ "$n" = 3 ] || fail "expected 3 runs in the manifest, got $n"
echo "PASS: 3 array tasks completed"
