#!/usr/bin/env bash
# slurm.timelimit_signal: the time-limit warning path without any scancel.
# sbatch --time=1 --signal=B:USR1@50: Slurm itself sends SIGUSR1 to the batch
# shell >= 10 s into the job; train.sbatch forwards it, moe-train checkpoints
# and exits 75, the job requeues and resumes from that checkpoint; the second
# incarnation is warned again, and with FINEMOE_MAX_REQUEUES=1 the job then
# stops requeueing and ends FAILED with exit code 75 (never killed by TIMEOUT).
#   test_timelimit.sh STATE_DIR WORK_DIR MOE_TRAIN JOBS_DIR
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; TRAIN=$3; JOBS=$4
rm -rf "$WORK"; mkdir -p "$WORK"
cat > "$WORK/run.ini" <<INI
[model]
d_model = 64
n_blocks = 1
seq_len = 64
vocab_size = 256
[moe]
experts = 4
[train]
steps = 1000000
batch_size = 4
log_every = 50
[run]
dir = $WORK/run
INI
export FINEMOE_TRAIN=$TRAIN FINEMOE_MAX_REQUEUES=1 OMP_NUM_THREADS=1
jid=$(sbatch --parsable --time=1 --signal=B:USR1@50 --chdir="$WORK" --output="$WORK/job.out" \
      "$JOBS/train.sbatch" "$WORK/run.ini") || fail "sbatch failed"
st=$(wait_job "$jid" 240)
grep -v -E "^step|routing step" "$WORK/job.out"
[ "$st" = FAILED ] || fail "job $jid ended $st, expected FAILED (exit 75 after the last allowed requeue)"
[ "$(job_field "$jid" ExitCode)" = 75:0 ] || fail "exit code $(job_field "$jid" ExitCode), expected 75:0"
[ "$(job_field "$jid" Restarts)" = 1 ] || fail "expected Restarts=1"
[ "$(grep -c "received SIGUSR1" "$WORK/job.out")" = 2 ] || fail "expected two SIGUSR1 warnings"
grep -q "not requeueing" "$WORK/job.out" || fail "FINEMOE_MAX_REQUEUES not honoured"
# Slurm may send the warning up to 60 s early (its event resolution; sbatch(1)
# --signal), so with --time=1 it can arrive while moe-train is still starting:
# then the trainer exits 75 before its first step with nothing to checkpoint
# (trainer.cpp). Each incarnation took one of the two paths; check the one taken.
ck=$(sed -n 's/.*checkpointed at step \([0-9]*\).*/\1/p' "$WORK/job.out" | head -n1)
if grep -q "stop signal received during start-up" "$WORK/job.out"; then
  # One incarnation took the start-up path, so there is no resume to check.
  echo "PASS (start-up path): Slurm warned during start-up, moe-train exited 75 before its first step; requeued once, then stopped"
elif [ -n "$ck" ]; then
  grep -q "resumed from .*step_0*$ck.h5 at step $ck" "$WORK/job.out" || fail "second incarnation did not resume from step $ck"
  [ "$(h5_attr "$WORK/run/metrics.h5" status)" = preempted ] || fail "status $(h5_attr "$WORK/run/metrics.h5" status), expected preempted"
  echo "PASS: warned at the time limit twice, resumed from step $ck, stopped after 1 requeue"
else
  fail "no checkpoint on the first warning, and no start-up exit either"
fi
