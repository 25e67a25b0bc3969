#!/usr/bin/env bash
# jobs/run_local.sh (and moe-sweep --local): trains every run of a sweep with
# the real moe-train, skips completed runs on rerun, and on SIGTERM stops with
# 75 leaving a checkpoint that the next invocation resumes.
#   run_local_test.sh MOE_SWEEP MOE_TRAIN SOURCE_DIR WORK_DIR
set -u
SWEEP=$1; TRAIN=$2; SRC=$3; WORK=$4
source "$SRC/tests/slurm/lib.sh"
rm -rf "$WORK"; mkdir -p "$WORK"
export OMP_NUM_THREADS=1 FINEMOE_TRAIN=$TRAIN
cat > "$WORK/spec.ini" <<INI
[sweep]
name = loc
n_blocks = 1
granularity = 1, 2
tokens = 30000
[model]
vocab_size = 256
[train]
log_every = 5
eval_tokens = 2048
final_eval_tokens = 2048
INI
# 1. moe-sweep --local writes the configs and runs them all.
"$SWEEP" --spec "$WORK/spec.ini" --out "$WORK/runs" --local --jobs-dir "$SRC/jobs" > "$WORK/first.log" 2>&1
rc=$?; cat "$WORK/first.log"
[ "$rc" = 0 ] || fail "moe-sweep --local exited $rc"
for d in "$WORK"/runs/loc-*/; do
  [ "$(h5_attr "$d/metrics.h5" status)" = completed ] || fail "$d not completed"
  [ "$(h5_values "$d/metrics.h5" /train/step | tail -n1)" = 29 ] || fail "$d: last step != 29 (30000/1024)"
done
# 2. Rerun: nothing to do.
bash "$SRC/jobs/run_local.sh" "$WORK/runs" > "$WORK/second.log" 2>&1 || fail "rerun exited $?"
grep -q "2 runs: 0 trained, 2 already completed, 0 failed" "$WORK/second.log" || { cat "$WORK/second.log"; fail "rerun did not skip"; }
# 3. Interrupt a longer run with SIGTERM: exit 75, status preempted; rerun resumes and completes.
sed -e 's/granularity = 1, 2/granularity = 2/' -e 's/tokens = 30000/tokens = 400000/' -e 's/name = loc/name = long/' \
  "$WORK/spec.ini" > "$WORK/long.ini"
"$SWEEP" --spec "$WORK/long.ini" --out "$WORK/long" > /dev/null || fail "moe-sweep (long) failed"
run=$(ls -d "$WORK"/long/long-*/)
bash "$SRC/jobs/run_local.sh" "$WORK/long" > "$WORK/long1.log" 2>&1 &
pid=$!
has_rows() { [ "$(h5_values "$run/metrics.h5" /train/step | wc -l)" -ge 3 ]; }
WAIT_S=60 wait_for has_rows || { kill $pid; cat "$WORK/long1.log"; fail "long run never logged"; }
kill -TERM $pid
wait $pid; rc=$?
cat "$WORK/long1.log"
[ "$rc" = 75 ] || fail "interrupted run_local exited $rc, expected 75"
[ "$(h5_attr "$run/metrics.h5" status)" = preempted ] || fail "status after interrupt: $(h5_attr "$run/metrics.h5" status)"
bash "$SRC/jobs/run_local.sh" "$WORK/long" > "$WORK/long2.log" 2>&1 || { cat "$WORK/long2.log"; fail "resume exited $?"; }
grep -q "preempted -> resuming" "$WORK/long2.log" || fail "second invocation did not resume"
grep -q "resumed from" "$WORK/long2.log" || fail "moe-train did not resume from a checkpoint"
[ "$(h5_attr "$run/metrics.h5" status)" = completed ] || fail "resumed run not completed"
[ "$(h5_values "$run/metrics.h5" /train/step | tail -n1)" = 391 ] || fail "resumed run: last step != 391 (400000/1024)"
# Usage errors.
bash "$SRC/jobs/run_local.sh" > /dev/null 2>&1; [ $? = 2 ] || fail "no RUNS_DIR: expected exit 2"
bash "$SRC/jobs/run_local.sh" "$WORK/nope" > /dev/null 2>&1; [ $? = 2 ] || fail "missing dir: expected exit 2"
bash "$SRC/jobs/run_local.sh" "$WORK/runs" --ranks x > /dev/null 2>&1; [ $? = 2 ] || fail "--ranks x: expected exit 2"
echo PASS
