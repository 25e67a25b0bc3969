#!/usr/bin/env bash
# slurm.preempt_requeue: jobs/train.sbatch on a 2-rank moe-train run.
# While it trains, `scancel --signal=USR1 --batch` (what --signal=B:USR1@120
# does before the time limit). Expect: train.sbatch forwards the signal,
# moe-train checkpoints and exits 75, the job requeues itself (Restarts=1),
# the same job id resumes from LATEST and completes; the loss curve in
# metrics.h5 has every logged step exactly once up to the last.
#   test_preempt_requeue.sh STATE_DIR WORK_DIR MOE_TRAIN JOBS_DIR
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; TRAIN=$3; JOBS=$4
rm -rf "$WORK"; mkdir -p "$WORK"
STEPS=300
cat > "$WORK/run.ini" <<INI
[model]
d_model = 64
n_blocks = 1
seq_len = 64
vocab_size = 512
[moe]
experts = 8
granularity = 2
group_size = 256
[train]
steps = $STEPS
batch_size = 16
log_every = 10
eval_tokens = 4096
final_eval_tokens = 4096
checkpoint_every = 0
[parallel]
expert_parallel = 1
[run]
dir = $WORK/run
INI
export FINEMOE_TRAIN=$TRAIN OMP_NUM_THREADS=1
t0=$(date +%s)
jid=$(sbatch --parsable -n 2 --chdir="$WORK" --output="$WORK/job.out" "$JOBS/train.sbatch" "$WORK/run.ini") || fail "sbatch failed"
# Wait until the trainer has logged steps (metrics rows), then preempt.
# Stop waiting early if the job ended (e.g. a config error) instead.
has_rows() {
  case "$(job_field "$jid" JobState)" in RUNNING|PENDING|CONFIGURING) ;; *) return 0 ;; esac
  [ "$(h5_values "$WORK/run/metrics.h5" /train/step | wc -l)" -ge 3 ]
}
WAIT_S=120 wait_for has_rows || { cat "$WORK/job.out"; fail "trainer never logged 3 rows"; }
[ "$(job_field "$jid" JobState)" = RUNNING ] || fail "job not running before the signal"
scancel --signal=USR1 --batch "$jid" || fail "scancel --signal=USR1 --batch failed"
t_sig=$(date +%s)
st=$(wait_job "$jid" 400)
t1=$(date +%s)
cat "$WORK/job.out"
[ "$st" = COMPLETED ] || fail "job $jid ended $st"
[ "$(job_field "$jid" Restarts)" = 1 ] || fail "expected Restarts=1, got $(job_field "$jid" Restarts)"
grep -q "received SIGUSR1" "$WORK/job.out" || fail "train.sbatch did not receive SIGUSR1"
grep -q "checkpointed and stopped (exit 75" "$WORK/job.out" || fail "moe-train did not exit 75"
grep -q "requeueing job $jid" "$WORK/job.out" || fail "no requeue"
grep -q "job $jid restart 1 " "$WORK/job.out" || fail "the requeued job did not start again"
grep -q "moe-train completed" "$WORK/job.out" || fail "resumed run did not complete"
[ "$(h5_attr "$WORK/run/metrics.h5" status)" = completed ] || fail "metrics.h5 status is not completed"
steps=$(h5_values "$WORK/run/metrics.h5" /train/step)
[ "$(echo "$steps" | tail -n1)" = "$STEPS" ] || fail "last logged step $(echo "$steps" | tail -n1) != $STEPS"
[ "$(echo "$steps" | sort -n | uniq -d | wc -l)" = 0 ] || fail "duplicate steps in the resumed curve"
echo "$steps" | sort -n -c || fail "steps not increasing"
# The first incarnation stopped mid-run: a checkpoint before STEPS exists in the log.
ck=$(sed -n 's/.*checkpointed at step \([0-9]*\).*/\1/p' "$WORK/job.out" | head -n1)
[ -n "$ck" ] && [ "$ck" -lt "$STEPS" ] || fail "no mid-run checkpoint reported by moe-train"
grep -q "resumed from .*step_0*$ck.h5 at step $ck" "$WORK/job.out" || fail "restart did not resume from the step-$ck checkpoint"
echo "PASS: preempted at step $ck, $((t_sig - t0)) s after submit, requeued+resumed+completed $((t1 - t_sig)) s after the signal"
