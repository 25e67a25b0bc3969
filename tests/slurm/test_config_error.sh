#!/usr/bin/env bash
# slurm.config_error_not_requeued: a config error (moe-train exit 2) fails the
# job with exit code 2 and is NOT requeued.
#   test_config_error.sh STATE_DIR WORK_DIR MOE_TRAIN JOBS_DIR
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; TRAIN=$3; JOBS=$4
rm -rf "$WORK"; mkdir -p "$WORK"
printf '[model]\nffn = bogus\n[run]\ndir = %s/run\n' "$WORK" > "$WORK/bad.ini"
export FINEMOE_TRAIN=$TRAIN
jid=$(sbatch --parsable --chdir="$WORK" --output="$WORK/job.out" "$JOBS/train.sbatch" "$WORK/bad.ini") || fail "sbatch failed"
st=$(wait_job "$jid" 120)
cat "$WORK/job.out"
[ "$st" = FAILED ] || fail "job $jid ended $st, expected FAILED"
[ "$(job_field "$jid" ExitCode)" = 2:0 ] || fail "exit code $(job_field "$jid" ExitCode), expected 2:0"
[ "$(job_field "$jid" Restarts)" = 0 ] || fail "a config error was requeued"
grep -q "model.ffn" "$WORK/job.out" || fail "the log does not name the bad key"
echo PASS
