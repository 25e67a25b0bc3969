#!/usr/bin/env bash
# slurm.signal_while_loading (no Slurm needed): a stop signal that reaches the
# trainer before it installed its handler (killed by SIGUSR1, status 138)
# ends jobs/train.sbatch with 75, so that the job is requeued like any other
# stop before the first step; any other signal death keeps its code.
#   test_signal_while_loading.sh WORK_DIR JOBS_DIR
set -u
WORK=$1; JOBS=$2
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
printf '[train]\nsteps = 1\n' > "$WORK/cfg.ini"
# A stand-in trainer without a handler: asks the batch shell (its parent) for
# a stop, which the shell forwards to it as SIGUSR1. Asked again every 0.2 s,
# in case the first request came before the shell knew the child's pid.
cat > "$WORK/fake-train" <<'FAKE'
#!/usr/bin/env bash
for i in $(seq 50); do kill -USR1 $PPID; sleep 0.2; done
FAKE
chmod +x "$WORK/fake-train"
env -u SLURM_JOB_ID FINEMOE_TRAIN="$WORK/fake-train" FINEMOE_LAUNCH=direct \
  bash "$JOBS/train.sbatch" "$WORK/cfg.ini" > "$WORK/out.txt" 2>&1
rc=$?
cat "$WORK/out.txt"
[ "$rc" = 75 ] || fail "train.sbatch exited $rc, expected 75"
grep -q "killed by the forwarded SIGUSR1 before it could handle it" "$WORK/out.txt" || fail "no log line"
grep -q "not under Slurm: rerun the same command to resume" "$WORK/out.txt" || fail "not handled as a stop"
# Killed by SIGUSR1 with no stop forwarded: not a preemption.
cat > "$WORK/fake-train" <<'FAKE'
#!/usr/bin/env bash
kill -USR1 $$
FAKE
env -u SLURM_JOB_ID FINEMOE_TRAIN="$WORK/fake-train" FINEMOE_LAUNCH=direct \
  bash "$JOBS/train.sbatch" "$WORK/cfg.ini" > "$WORK/out2.txt" 2>&1
rc=$?
cat "$WORK/out2.txt"
[ "$rc" = 138 ] || fail "without a forwarded stop train.sbatch exited $rc, expected 138"
echo PASS
