#!/usr/bin/env bash
# moe-bench's fp32 engine: the default (train.fp32_engine auto) is resolved as
# moe-train resolves it and the JSON records the choice and the reason (the
# measured ratio); --fp32-engine and train.fp32_engine select it explicitly
# (--fp32-engine wins); bad values exit 2 naming the option or key. Beside the
# engine, the device: run.device resolved as moe-train resolves it (this build
# has no CUDA backend: auto and cpu run cpu, cuda exits 2 naming the key).
#   bench_engine_test.sh MOE_BENCH
set -u
BENCH=$1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
ARGS="--model.d_model 64 --model.n_blocks 1 --model.seq_len 32 --model.vocab_size 64 --train.batch_size 8
      --moe.experts 4 --moe.group_size 64 --train.threads 1 --steps 1 --warmup 0 --peak-seconds 0.01"
# field NAME: a top-level string of the JSON object in $T/out.
field() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$T/out" "$1"; }
bench() {  # bench EXPECTED_ENGINE REQUESTED WHY_PREFIX args...
  local engine=$1 requested=$2 why=$3; shift 3
  # shellcheck disable=SC2086
  "$BENCH" $ARGS "$@" >"$T/out" 2>"$T/err" || { cat "$T/err"; fail "moe-bench $* exited $?"; }
  local got; got=$(field fp32_engine) || fail "no fp32_engine in the JSON: $(cat "$T/out")"
  [ -z "$engine" ] || [ "$got" = "$engine" ] || fail "moe-bench $*: fp32_engine $got, expected $engine"
  [ "$(field fp32_engine_requested)" = "$requested" ] || fail "moe-bench $*: fp32_engine_requested $(field fp32_engine_requested)"
  case "$(field fp32_engine_why)" in "$why"*) ;; *) fail "moe-bench $*: fp32_engine_why '$(field fp32_engine_why)'";; esac
  [ "$(field device)" = cpu ] || fail "moe-bench $*: device '$(field device)', expected cpu"
  case "$(field backend)" in "cpu: $(field engine)") ;; *) fail "moe-bench $*: backend '$(field backend)'";; esac
  case "$got" in
    onednn) field engine | grep -q "^oneDNN matmul" || fail "engine $(field engine) is not oneDNN" ;;
    openblas) field engine | grep -q "^OpenBLAS sgemm" || fail "engine $(field engine) is not OpenBLAS" ;;
    *) fail "fp32_engine '$got'" ;;
  esac
}
# Default: auto, measured; the reason names the ratio, and the choice follows it.
bench "" auto "auto: "
why=$(field fp32_engine_why); got=$(field fp32_engine)
if ! echo "$why" | grep -q "this build has no oneDNN"; then
  ratio=$(echo "$why" | sed -n "s/.* measured \([0-9.]*\)x OpenBLAS's speed at this model's GEMM shapes.*/\1/p")
  [ -n "$ratio" ] || fail "auto's reason names no measured ratio: $why"
  /usr/bin/python3 -c "import sys; r=float(sys.argv[1]); sys.exit(0 if (r > 1.05) == (sys.argv[2] == 'onednn') or abs(r - 1.05) < 0.006 else 1)" \
    "$ratio" "$got" || fail "picked $got at ratio $ratio"
  DNNL=1
else
  [ "$got" = openblas ] || fail "no oneDNN but picked $got"
  DNNL=0
fi
bench openblas openblas "openblas requested" --fp32-engine openblas
bench openblas openblas "openblas requested" --train.fp32_engine onednn --fp32-engine openblas  # the option wins
if [ "$DNNL" = 1 ]; then
  bench onednn onednn "onednn requested" --train.fp32_engine onednn
fi
"$BENCH" $ARGS --fp32-engine mkl >"$T/out" 2>"$T/err"; rc=$?
[ "$rc" = 2 ] || fail "--fp32-engine mkl exited $rc, expected 2"
grep -q "option '--fp32-engine': expected auto | openblas | onednn, got 'mkl'" "$T/err" || fail "$(cat "$T/err")"
"$BENCH" $ARGS --train.fp32_engine mkl >"$T/out" 2>"$T/err"; rc=$?
[ "$rc" = 2 ] || fail "--train.fp32_engine mkl exited $rc, expected 2"
grep -q "config key 'train.fp32_engine': must be one of auto, openblas, onednn, got 'mkl'" "$T/err" || fail "$(cat "$T/err")"
# run.device: auto (the default) and cpu run the CPU backend, each with its reason.
bench openblas openblas "openblas requested" --fp32-engine openblas
[ "$(field device_requested)" = auto ] || fail "default device_requested '$(field device_requested)'"
[ "$(field device_why)" = "auto: no CUDA backend built, so cpu" ] || fail "auto's device_why '$(field device_why)'"
bench openblas openblas "openblas requested" --fp32-engine openblas --run.device cpu
[ "$(field device_requested)" = cpu ] || fail "device_requested '$(field device_requested)'"
[ "$(field device_why)" = "cpu requested" ] || fail "cpu's device_why '$(field device_why)'"
"$BENCH" $ARGS --run.device cuda >"$T/out" 2>"$T/err"; rc=$?
[ "$rc" = 2 ] || fail "--run.device cuda exited $rc, expected 2"
grep -q "config key 'run.device': cuda requested, but this build has no CUDA backend yet" "$T/err" || fail "$(cat "$T/err")"
"$BENCH" $ARGS --run.device gpu >"$T/out" 2>"$T/err"; rc=$?
[ "$rc" = 2 ] || fail "--run.device gpu exited $rc, expected 2"
grep -q "config key 'run.device': must be one of cpu, cuda, auto, got 'gpu'" "$T/err" || fail "$(cat "$T/err")"
echo PASS
