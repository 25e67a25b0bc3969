#!/usr/bin/env bash
# Compares two moe-bench builds (before/after a change) on the standard set
# (bench/run_standard.sh's configs), back to back: for each config and each of
# ROUNDS rounds, A then B then B then A, so that slow drift of a shared
# machine (other jobs, clocks) falls on both alike. Per config it prints the
# best step time of each binary over all its runs and the ratio B/A
# (> 1: B slower).
#
# Usage: bench/ab_compare.sh MOE_BENCH_A MOE_BENCH_B [OUT_PREFIX]
#   env STEPS (default 5), WARMUP (1), BATCH (4), ROUNDS (2), PRECISION (fp32),
#   THREADS (0 = all cores), LIMIT (1.03: the ratio above which a config is
#   reported SLOWER and the exit status is 1).
# Runs in the environment it is given (no OMP_* or OPENBLAS_* set here).
# Raw JSON lines: OUT_PREFIX_a.jsonl and OUT_PREFIX_b.jsonl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
a="$1" b="$2"
prefix="${3:-ab_$(date +%Y%m%d_%H%M%S)}"
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "ab_compare.sh: moe-bench binary '$bin' not found or not executable" >&2; exit 2; }
done
steps="${STEPS:-5}" warmup="${WARMUP:-1}" batch="${BATCH:-4}" rounds="${ROUNDS:-2}"
prec="${PRECISION:-fp32}" threads="${THREADS:-0}" limit="${LIMIT:-1.03}"
: > "${prefix}_a.jsonl"
: > "${prefix}_b.jsonl"

one() {  # which(a|b) label config [extra args]
  local which="$1" label="$2" cfg="$3" bin
  shift 3
  if [ "$which" = a ]; then bin="$a"; else bin="$b"; fi
  echo "== $label ($which)" >&2
  "$bin" --config "$cfg" --train.precision "$prec" --train.batch_size "$batch" --train.threads "$threads" \
    --steps "$steps" --warmup "$warmup" --json-out "${prefix}_${which}.jsonl" "$@" > /dev/null
}

configs=("dense|$here/configs/dense_d512.ini|")
for routing in expert_choice token_choice; do
  for G in 1 4 16; do configs+=("moe_g${G}_${routing}|$here/configs/moe_e8_g$G.ini|--moe.routing $routing"); done
done

for entry in "${configs[@]}"; do
  IFS='|' read -r label cfg extra <<< "$entry"
  for ((r = 0; r < rounds; ++r)); do
    for which in a b b a; do
      # shellcheck disable=SC2086  # extra is a word list on purpose
      one "$which" "$label" "$cfg" $extra
    done
  done
done

python3 - "${prefix}_a.jsonl" "${prefix}_b.jsonl" "$limit" "$a" "$b" <<'EOF'
import json, sys
pa, pb, limit, bin_a, bin_b = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]

def label(r):
    m = r["model"]
    return "dense" if m["ffn"] == "dense" else "moe G=%d %s" % (m["G"], m["routing"])

def best(path):
    out, order = {}, []
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            if "ms_per_step_best" not in r:
                continue
            k = label(r)
            if k not in out:
                order.append(k)
                out[k] = (r["ms_per_step_best"], 0, r.get("cpu", ""))
            n = out[k][1] + 1
            out[k] = (min(out[k][0], r["ms_per_step_best"]), n, out[k][2])
    return out, order

A, order = best(pa)
B, _ = best(pb)
print("A = %s\nB = %s" % (bin_a, bin_b))
print("%-28s %10s %10s %8s %6s" % ("config", "A ms/step", "B ms/step", "B/A", "runs"))
slower = 0
for k in order:
    if k not in B:
        print("%-28s missing in B" % k)
        slower += 1
        continue
    ratio = B[k][0] / A[k][0]
    flag = "  SLOWER" if ratio > limit else ""
    slower += ratio > limit
    print("%-28s %10.1f %10.1f %8.3f %3d/%-2d%s" % (k, A[k][0], B[k][0], ratio, A[k][1], B[k][1], flag))
print("best step time per binary over all its runs; limit B/A <= %.2f" % limit)
sys.exit(1 if slower else 0)
EOF
