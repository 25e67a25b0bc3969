#!/usr/bin/env bash
# finemoe vs eager PyTorch on the CPU, same model and step, same run, default
# environment for both sides (issue 17): for each config, one moe-bench run
# then the PyTorch run (bench/pytorch_compare.py) of the same config, thread
# count and precision, repeated ROUNDS times; prints the best step of each
# side and ratio = PyTorch best / finemoe best (> 1: finemoe faster).
#
# Usage: bench/compare_pytorch.sh [MOE_BENCH_BINARY] [OUT_PREFIX]
#   env STEPS (4), WARMUP (1), THREADS ("2"; a list runs each), ROUNDS (1),
#   PRECISIONS ("fp32"; add bf16 where the CPU has native bf16),
#   CONFIGS ("dense moe1 moe16": MoE E=8 expert choice at G = 1 and 16).
# Needs /usr/bin/python3 with Debian's python3-torch. No OMP_* or OPENBLAS_*
# is set here: both sides run in the environment they are given.
# Raw results: OUT_PREFIX_finemoe.jsonl, OUT_PREFIX_pytorch.jsonl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/release/moe-bench}"
prefix="${2:-pytorch_cmp_$(date +%Y%m%d_%H%M%S)}"
steps="${STEPS:-4}" warmup="${WARMUP:-1}" rounds="${ROUNDS:-1}"
threads_list="${THREADS:-2}" precisions="${PRECISIONS:-fp32}" configs="${CONFIGS:-dense moe1 moe16}"
py=/usr/bin/python3
[ -x "$bin" ] || { echo "compare_pytorch.sh: moe-bench not found at '$bin' (pass its path first)" >&2; exit 2; }
"$py" -c 'import torch' 2> /dev/null || {
  echo "compare_pytorch.sh: $py cannot import torch (apt-get install python3-torch)" >&2
  exit 2
}
: > "${prefix}_finemoe.jsonl"
: > "${prefix}_pytorch.jsonl"

for ((r = 0; r < rounds; ++r)); do
  for prec in $precisions; do
    for th in $threads_list; do
      for c in $configs; do
        case "$c" in
          dense) cfg=dense_d512.ini fm_extra=() pt_extra=(--ffn dense) ;;
          moe1) cfg=moe_e8_g1.ini fm_extra=(--moe.routing expert_choice) pt_extra=(--ffn moe --G 1) ;;
          moe16) cfg=moe_e8_g16.ini fm_extra=(--moe.routing expert_choice) pt_extra=(--ffn moe --G 16) ;;
          *) echo "compare_pytorch.sh: unknown config '$c' in CONFIGS (dense, moe1, moe16)" >&2; exit 2 ;;
        esac
        echo "== $c $prec threads=$th round $((r + 1))/$rounds" >&2
        "$bin" --config "$here/configs/$cfg" --train.precision "$prec" --train.batch_size 4 --train.threads "$th" \
          --steps "$steps" --warmup "$warmup" --json-out "${prefix}_finemoe.jsonl" "${fm_extra[@]}" > /dev/null
        "$py" "$here/pytorch_compare.py" "${pt_extra[@]}" --precision "$prec" --threads "$th" --steps "$steps" \
          --warmup "$warmup" | tail -n 1 | "$py" -c '
import json, sys
r = json.loads(sys.stdin.read()); r["config"] = sys.argv[1]; print(json.dumps(r))' "$c" >> "${prefix}_pytorch.jsonl"
      done
    done
  done
done

"$py" - "${prefix}_finemoe.jsonl" "${prefix}_pytorch.jsonl" <<'EOF'
import json, sys
fm = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pt = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print("%-7s %-5s %3s %14s %14s %7s" % ("config", "prec", "thr", "finemoe ms", "PyTorch ms", "ratio"))
for f, p in zip(fm, pt):
    fb = f["ms_per_step_best"]
    pb = 1e3 * p["tokens_per_step"] / p["tokens_per_s_best"]  # its best step (same rule as moe-bench)
    print("%-7s %-5s %3d %14.1f %14.1f %7.3f" % (p["config"], f["precision"], f["threads"], fb, pb, pb / fb))
print("best step per run; ratio = PyTorch / finemoe (> 1: finemoe faster); CPU isa: %s" % fm[0].get("cpu_isa", "?"))
EOF
