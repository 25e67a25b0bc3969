#!/usr/bin/env bash
# moe-sweep command line: exit codes, messages naming the key, --print writes
# nothing, files written, idempotent rerun, --slurm script, shipped examples.
#   cli_test.sh MOE_SWEEP SOURCE_DIR
set -u
SWEEP=$1; SRC=$2
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
expect_rc() {  # expect_rc CODE NEEDLE cmd...
  local code=$1 needle=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  [ "$rc" = "$code" ] || { cat "$T/out" "$T/err"; fail "'$*' exited $rc, expected $code"; }
  [ -z "$needle" ] || grep -q -- "$needle" "$T/err" "$T/out" || { cat "$T/err"; fail "'$*': output lacks '$needle'"; }
}

cat > "$T/spec.ini" <<INI
[sweep]
name = c
n_blocks = 1, 2
granularity = 1, 4
tokens = 1e5
[model]
seq_len = 64
[train]
batch_size = 16
INI

expect_rc 0 "--spec" "$SWEEP" --help
expect_rc 2 "--spec is required" "$SWEEP" --out "$T/r"
expect_rc 2 "--out is required" "$SWEEP" --spec "$T/spec.ini"
expect_rc 2 "nope.ini" "$SWEEP" --spec "$T/nope.ini" --out "$T/r"
expect_rc 2 "bogus" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --bogus 1
expect_rc 2 "model.d_modl" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --model.d_modl 3
printf '[sweep]\ngranularity = 1, two\ntokens = 1e5\n' > "$T/bad.ini"
expect_rc 2 "sweep.granularity" "$SWEEP" --spec "$T/bad.ini" --out "$T/r"
[ ! -e "$T/r" ] || fail "a failing spec created the runs dir"

# --print: manifest on stdout, nothing written.
expect_rc 0 "" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --print
[ "$(wc -l < "$T/out")" = 5 ] || { cat "$T/out"; fail "--print: expected header + 4 runs"; }
[ ! -e "$T/r" ] || fail "--print wrote files"

# Write, CLI override beats spec, rerun unchanged.
expect_rc 0 "4 runs (4 config files written" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --train.lr 0.003
[ "$(ls "$T"/r/*/config.ini | wc -l)" = 4 ] || fail "expected 4 config.ini"
grep -qx "lr = 0.0030000000000000001\|lr = 0.003" "$T/r/c-L1-d64-E8-G1-D1e5/config.ini" || fail "CLI override not applied"
grep -qx "steps = 98" "$T/r/c-L1-d64-E8-G1-D1e5/config.ini" || fail "steps not 98 (1e5/1024)"
expect_rc 0 "0 config files written, 4 unchanged" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --train.lr 0.003
expect_rc 2 "exists with a different config" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --train.lr 0.004
expect_rc 0 "4 config files written" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --train.lr 0.004 --force

# --slurm: array script over the 4 runs, pointing at this checkout's train.sbatch.
expect_rc 0 "sbatch" "$SWEEP" --spec "$T/spec.ini" --out "$T/r" --train.lr 0.004 --slurm --jobs-dir "$SRC/jobs"
grep -q "^#SBATCH --array=0-3$" "$T/r/sweep.sbatch" || fail "array range"
grep -q "exec bash '$SRC/jobs/train.sbatch'" "$T/r/sweep.sbatch" || fail "train.sbatch path"
bash -n "$T/r/sweep.sbatch" || fail "sweep.sbatch is not valid bash"
expect_rc 2 "jobs-dir" "$SWEEP" --spec "$T/spec.ini" --out "$T/r2" --slurm --jobs-dir "$T/nojobs"

# Every shipped spec expands and validates.
n=0
for s in "$SRC"/input/sweep-*.ini "$SRC"/input/demo-sweep.ini "$SRC"/input/study-*.ini; do
  [ -f "$s" ] || continue
  expect_rc 0 "" "$SWEEP" --spec "$s" --out "$T/x" --print
  [ "$(wc -l < "$T/out")" -ge 2 ] || fail "$s expands to no runs"
  n=$((n + 1))
done
[ "$n" -ge 1 ] || fail "no shipped sweep specs found in $SRC/input"
# The study's spec: 90 main runs + the 20 runs of its token-choice slice, named and routed as such.
expect_rc 0 "" "$SWEEP" --spec "$SRC/input/study-cpu.ini" --out "$T/study" --print
[ "$(grep -c '^study-' "$T/out")" = 110 ] || fail "study-cpu.ini: expected 110 runs, got $(grep -c '^study-' "$T/out")"
[ "$(grep -c '^study-tc-L2-d96-E8-G' "$T/out")" = 20 ] || fail "study-cpu.ini: expected 20 token-choice runs"
expect_rc 0 "" "$SWEEP" --spec "$SRC/input/study-cpu.ini" --out "$T/study"
grep -q '^routing = token_choice' "$T/study/study-tc-L2-d96-E8-G4-D3e5/config.ini" || fail "slice run is not token choice"
grep -q '^routing = expert_choice' "$T/study/study-L2-d96-E8-G4-D3e5/config.ini" || fail "main run is not expert choice"
echo "PASS ($n shipped specs expand)"
