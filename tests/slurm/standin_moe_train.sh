#!/usr/bin/env bash
# TEST STAND-IN for moe-train — used ONLY to test the Slurm plumbing of
# jobs/*.sbatch when the real moe-train is not built. It honours moe-train's
# job-script contract and nothing else:
#   --config FILE [--section.key value ...]; reads run.dir and train.steps;
#   run.resume=auto continues from RUN_DIR/checkpoints/LATEST (a step number);
#   SIGUSR1/SIGTERM/SIGINT: finish the step, "checkpoint", exit 75;
#   exit 0 when all steps are done, 2 on a bad command line.
# Every event is appended to RUN_DIR/standin.log so tests can check the story.
set -u
cfg= ; dir= ; steps= ; resume=auto ; step_s=${STANDIN_STEP_SECONDS:-0.2}
ini_get() {  # ini_get FILE SECTION KEY
  awk -v s="[$2]" -v k="$3" '
    /^\[/ {sec=$0; next}
    sec==s { line=$0; sub(/[;#].*/, "", line); n=index(line, "=");
             if (n) { key=substr(line,1,n-1); val=substr(line,n+1);
                      gsub(/^[ \t]+|[ \t]+$/, "", key); gsub(/^[ \t]+|[ \t]+$/, "", val);
                      if (key==k) print val } }' "$1" | tail -n1
}
while [ $# -gt 0 ]; do
  case "$1" in
    --config) cfg=$2; shift 2 ;;
    --run.dir) dir=$2; shift 2 ;;
    --train.steps) steps=$2; shift 2 ;;
    --run.resume) resume=$2; shift 2 ;;
    --*.*) shift 2 ;;
    *) echo "standin: unexpected argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -n "$cfg" ]; then
  [ -r "$cfg" ] || { echo "standin: cannot open config file '$cfg'" >&2; exit 2; }
  [ -n "$dir" ] || dir=$(ini_get "$cfg" run dir)
  [ -n "$steps" ] || steps=$(ini_get "$cfg" train steps)
fi
dir=${dir:-runs/default}; steps=${steps:-200}
mkdir -p "$dir/checkpoints"
start=0
if [ "$resume" = auto ] && [ -f "$dir/checkpoints/LATEST" ]; then start=$(cat "$dir/checkpoints/LATEST"); fi
rank=${PMIX_RANK:-${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}}
note() { [ "$rank" = 0 ] && echo "$* pid=$$" >> "$dir/standin.log"; echo "standin[$rank]: $*"; }
stop=
trap 'stop=USR1' USR1; trap 'stop=TERM' TERM; trap 'stop=INT' INT
note "start step=$start steps=$steps"
step=$start
while [ "$step" -lt "$steps" ]; do
  sleep "$step_s"
  step=$((step + 1))
  if [ -n "$stop" ]; then
    [ "$rank" = 0 ] && echo "$step" > "$dir/checkpoints/LATEST"
    note "preempted signal=$stop step=$step"
    exit 75
  fi
done
[ "$rank" = 0 ] && echo "$step" > "$dir/checkpoints/LATEST"
note "completed step=$step"
exit 0
