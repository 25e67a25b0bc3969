# Shared helpers of the Slurm tests (sourced). Usage in a test:
#   source lib.sh; require_slurm STATE_DIR; jid=$(sbatch --parsable ...); wait_job $jid 120
SKIP=77

# Points the clients at the private cluster, or exits 77 (CTest: skipped)
# when it is not running — start_slurm.sh explains why on its own stderr.
require_slurm() {
  export SLURM_CONF=$1/slurm.conf
  if [ ! -f "$SLURM_CONF" ] || ! timeout 10 sinfo -h >/dev/null 2>&1; then
    echo "SKIP: no private Slurm at $1 (start_slurm.sh could not start it)"
    exit $SKIP
  fi
}

fail() { echo "FAIL: $*"; exit 1; }

# job_field JOBID FIELD -> value of FIELD=value in `scontrol show job`.
job_field() {
  scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1
}

# wait_job JOBID TIMEOUT_S: waits until the job reaches a final state and
# prints it (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...).
wait_job() {
  local jid=$1 limit=$2 t=0 st
  while [ "$t" -lt "$limit" ]; do
    st=$(job_field "$jid" JobState)
    case "$st" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) echo "$st"; return 0 ;;
    esac
    sleep 1; t=$((t + 1))
  done
  echo "WAIT_TIMEOUT($st)"
  return 1
}

# wait_for CMD... : polls a condition for up to $WAIT_S (default 120) seconds.
wait_for() {
  local t=0
  while [ "$t" -lt "${WAIT_S:-120}" ]; do "$@" && return 0; sleep 1; t=$((t + 1)); done
  return 1
}

# Value of a root attribute of an HDF5 file (string or number), via h5dump.
h5_attr() {
  h5dump -a "/$2" "$1" 2>/dev/null | sed -n 's/.*(0): *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' | head -n1
}

# Values of a 1-D dataset, one per line, via h5dump.
h5_values() {
  h5dump -d "$2" -y "$1" 2>/dev/null | sed -n '/DATA {/,/}/p' | sed '1d;$d' | tr ',' '\n' | tr -d ' ' | grep -v '^$'
}
