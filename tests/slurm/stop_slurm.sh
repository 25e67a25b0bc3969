#!/usr/bin/env bash
# Stops the private test cluster started by start_slurm.sh for STATE_DIR
# (default /tmp/finemoe-slurm-$UID or $FINEMOE_SLURM_DIR). Idempotent: stopping
# a cluster that is not running succeeds. Kills only the daemons whose pid
# files live in STATE_DIR.
set -u
DIR=${1:-${FINEMOE_SLURM_DIR:-/tmp/finemoe-slurm-$(id -u)}}
[ -d "$DIR" ] || exit 0
for d in slurmd slurmctld; do
  pidf=$DIR/$d.pid
  [ -f "$pidf" ] || continue
  pid=$(cat "$pidf")
  # Only a process that really is this daemon (a stale pid may be reused).
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidf"
done
exit 0
