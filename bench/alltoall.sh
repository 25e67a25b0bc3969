#!/usr/bin/env bash
# Expert-parallel communication per step on 1, 2 and 4 ranks (EP = ranks).
#
# On this 2-core machine, step time at 2 and 4 ranks is dominated by
# oversubscription, so the useful numbers are the all-to-all BYTES per step
# (exact, independent of the machine) and the time spent inside the
# collectives; with them and a cluster's all-to-all bandwidth the scaling of a
# real run can be estimated. Usage: bench/alltoall.sh [build_dir] [extra moe-train args]
set -euo pipefail
BUILD="${1:-build/release}"; shift || true
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN="mpirun --oversubscribe --bind-to none"
ARGS="--model.d_model 256 --model.n_blocks 4 --model.seq_len 256 --model.vocab_size 512 --train.batch_size 16
      --moe.experts 8 --moe.granularity 4 --moe.group_size 256 --train.steps 12 --train.log_every 4
      --train.threads 1 --run.resume never $*"
printf "%-6s %-4s %-14s %-14s %-10s\n" ranks EP "a2a MB/step" "a2a ms/step" "tokens/s"
for n in 1 2 4; do
  dir=$(mktemp -d /tmp/finemoe_a2a_XXXXXX)
  out=$($MPIRUN -n $n "$BUILD/moe-train" $ARGS --parallel.expert_parallel $n --run.dir "$dir" 2>&1)
  a2a=$(echo "$out" | grep 'all-to-all' | tail -1)
  mb=$(echo "$a2a" | sed -n 's/.*: \([0-9.]*\) MB\/step.*/\1/p'); ms=$(echo "$a2a" | sed -n 's/.*, \([0-9.]*\) ms\/step.*/\1/p')
  tps=$(echo "$out" | grep '^step' | tail -1 | sed -n 's/.*| \([0-9]*\) tok\/s.*/\1/p')
  printf "%-6s %-4s %-14s %-14s %-10s\n" $n $n "${mb:-0}" "${ms:-0}" "$tps"
  rm -rf "$dir"
done
