#!/usr/bin/env bash
# slurm.sbatch_basic: the private cluster runs a batch job with a 2-task step
# and an MPI step through srun's PMIx plugin (what jobs/train.sbatch uses).
#   test_sbatch_basic.sh STATE_DIR WORK_DIR MOE_TRAIN
set -u
source "$(dirname "$0")/lib.sh"
require_slurm "$1"
WORK=$2; TRAIN=$3
rm -rf "$WORK"; mkdir -p "$WORK"
srun --mpi=list 2>&1 | grep -qw pmix || fail "srun has no pmix plugin: $(srun --mpi=list 2>&1 | tr '\n' ' ')"
cat > "$WORK/job.sh" <<JOB
#!/usr/bin/env bash
#SBATCH --ntasks=2
echo "job \$SLURM_JOB_ID ntasks \$SLURM_NTASKS"
srun -n 2 bash -c 'echo task \$SLURM_PROCID'
# An MPI program launched by srun: 2 ranks agree (moe-train reads the config
# on every rank; --print-config prints on rank 0 only).
srun --mpi=pmix -n 2 "$TRAIN" --print-config --model.d_model 64 > "$WORK/printed.ini"
echo "mpi rc \$?"
JOB
jid=$(sbatch --parsable --chdir="$WORK" --output="$WORK/job.out" "$WORK/job.sh") || fail "sbatch failed"
st=$(wait_job "$jid" 120)
cat "$WORK/job.out"
[ "$st" = COMPLETED ] || fail "job $jid ended $st"
[ "$(job_field "$jid" ExitCode)" = 0:0 ] || fail "exit code $(job_field "$jid" ExitCode)"
grep -q "ntasks 2" "$WORK/job.out" || fail "SLURM_NTASKS"
[ "$(grep -c '^task [01]$' "$WORK/job.out")" = 2 ] || fail "expected two tasks"
grep -q "mpi rc 0" "$WORK/job.out" || fail "srun --mpi=pmix step failed"
[ "$(grep -c '^\[model\]' "$WORK/printed.ini")" = 1 ] || fail "MPI step: expected exactly one rank-0 config print"
grep -qx "d_model = 64" "$WORK/printed.ini" || fail "printed config lacks d_model = 64"
echo PASS
