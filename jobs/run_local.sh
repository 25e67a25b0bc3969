#!/usr/bin/env bash
# Trains every run of a sweep, one after another, without Slurm.
#
#   bash jobs/run_local.sh RUNS_DIR [--ranks N]
#
# RUNS_DIR is what `moe-sweep --out RUNS_DIR` wrote (RUNS_DIR/NAME/config.ini,
# in the order of RUNS_DIR/sweep.tsv when present). Rerunning is safe:
#   * runs whose metrics.h5 says status "completed" are skipped;
#   * the others start or resume (run.resume=auto picks up checkpoints/LATEST).
# Ctrl-C (SIGINT) makes moe-train checkpoint and exit 75; this script then stops
# so that the next invocation resumes where it was.
# --ranks N > 1 launches `mpirun -n N` (Open MPI flags for root/oversubscribe).
#
# moe-train: $FINEMOE_TRAIN or $MOE_TRAIN, else moe-train on PATH, else
# build/moe-train or the newest build/*/moe-train of this checkout.
# Exit: 0 all runs completed; 75 interrupted; 1 some run failed (its name and
# exit code are listed; the other runs still ran); 2 bad usage.
set -u
usage() { echo "usage: bash jobs/run_local.sh RUNS_DIR [--ranks N]" >&2; exit 2; }
log() { echo "[run_local] $*"; }

RUNS_DIR=
RANKS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) [ $# -ge 2 ] || usage; RANKS=$2; shift 2 ;;
    --ranks=*) RANKS=${1#--ranks=}; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run_local: unknown option '$1'" >&2; usage ;;
    *) [ -z "$RUNS_DIR" ] || usage; RUNS_DIR=$1; shift ;;
  esac
done
[ -n "$RUNS_DIR" ] || usage
[ -d "$RUNS_DIR" ] || { echo "run_local: runs directory '$RUNS_DIR' not found" >&2; exit 2; }
case "$RANKS" in ''|*[!0-9]*|0) echo "run_local: --ranks must be a positive integer, got '$RANKS'" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRAIN=${FINEMOE_TRAIN:-${MOE_TRAIN:-}}
if [ -z "$TRAIN" ]; then
  if command -v moe-train >/dev/null 2>&1; then TRAIN=$(command -v moe-train)
  elif [ -x "$ROOT/build/moe-train" ]; then TRAIN=$ROOT/build/moe-train
  else TRAIN=$(ls -t "$ROOT"/build/*/moe-train 2>/dev/null | head -n1)
  fi
fi
[ -n "$TRAIN" ] && [ -x "$TRAIN" ] || { echo "run_local: moe-train not found; set FINEMOE_TRAIN=/path/to/moe-train" >&2; exit 2; }

# Run order: the manifest's, else alphabetical.
NAMES=()
if [ -f "$RUNS_DIR/sweep.tsv" ]; then
  while IFS=$'\t' read -r name _; do
    [ "$name" = name ] || [ -z "$name" ] || NAMES+=("$name")
  done < "$RUNS_DIR/sweep.tsv"
else
  for c in "$RUNS_DIR"/*/config.ini; do [ -f "$c" ] && NAMES+=("$(basename "$(dirname "$c")")"); done
fi
[ ${#NAMES[@]} -gt 0 ] || { echo "run_local: no runs in '$RUNS_DIR' (expected NAME/config.ini from moe-sweep)" >&2; exit 2; }

# status attribute of metrics.h5, "" when absent/unreadable. h5dump prints
#   DATA { (0): "completed" }
run_status() {
  local f=$1/metrics.h5
  [ -f "$f" ] || return 0
  h5dump -a /status "$f" 2>/dev/null | sed -n 's/.*(0): *"\([a-z]*\)".*/\1/p' | head -n1
}

if [ "$RANKS" -gt 1 ]; then
  LAUNCH=(mpirun -n "$RANKS" --bind-to none --oversubscribe)
  [ "$(id -u)" = 0 ] && LAUNCH+=(--allow-run-as-root)
else
  LAUNCH=()
fi

# Forward Ctrl-C/TERM as a checkpoint request; the trainer exits 75.
CHILD=
trap '[ -n "$CHILD" ] && kill -INT "$CHILD" 2>/dev/null' INT
trap '[ -n "$CHILD" ] && kill -USR1 "$CHILD" 2>/dev/null' TERM USR1

total=${#NAMES[@]}; done_n=0; skipped=0; failed=()
i=0
for name in "${NAMES[@]}"; do
  i=$((i + 1))
  dir=$RUNS_DIR/$name
  cfg=$dir/config.ini
  if [ ! -f "$cfg" ]; then log "[$i/$total] $name: missing $cfg"; failed+=("$name(no config)"); continue; fi
  st=$(run_status "$dir")
  if [ "$st" = completed ]; then log "[$i/$total] $name: completed, skipping"; skipped=$((skipped + 1)); continue; fi
  log "[$i/$total] $name: ${st:-new}${st:+ -> resuming}"
  "${LAUNCH[@]}" "$TRAIN" --config "$cfg" --run.resume auto &
  CHILD=$!
  while :; do wait "$CHILD"; rc=$?; kill -0 "$CHILD" 2>/dev/null || break; done
  wait "$CHILD" 2>/dev/null; rc2=$?; [ "$rc2" != 127 ] && rc=$rc2   # the child's own status
  CHILD=
  case "$rc" in
    0) done_n=$((done_n + 1)) ;;
    75) log "$name: interrupted and checkpointed; rerun this command to resume"; exit 75 ;;
    *) log "$name: moe-train exited with $rc"; failed+=("$name(exit $rc)") ;;
  esac
done
log "$total runs: $done_n trained, $skipped already completed, ${#failed[@]} failed${failed:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ] || exit 1
exit 0
