#!/usr/bin/env bash
# The study in one command: expand a sweep spec, train every run (here, one
# after another, or as a Slurm array), fit the scaling law, and regenerate the
# study's generated files (figures, report, fit.json, header).
#
#   bash scripts/study.sh [--slurm] [--spec FILE] [--runs DIR] [--docs DIR]
#                         [--bootstrap N] [--no-build] [--fit-only]
#
#   --spec FILE     sweep spec (default input/study-cpu.ini)
#   --runs DIR      runs directory (default runs/study)
#   --docs DIR      where the generated files go (default docs/study/generated;
#                   "none": leave the analysis in RUNS/analysis only)
#   --slurm         submit the runs as one Slurm array (moe-sweep --slurm, then
#                   sbatch) and wait for it; the same spec serves a cluster
#                   (set its [slurm] section: partition, account, time, ...)
#   --bootstrap N   bootstrap resamples of the fits (default 200)
#   --no-build      use the existing build/release (default: build it first)
#   --fit-only      skip the sweep and the training: re-fit the runs already
#                   in RUNS (e.g. with a newer moe-analyze) and rewrite the docs
#
# Rerunning is safe: completed runs are skipped, interrupted ones resume.
# Two fits are made: c free (does the fit find the corpus' entropy floor?) and
# c fixed at the floor (--fix-c entropy; the law's other terms).
# Exit: 0 done; 1 a step failed (named); 2 bad usage; 75 training interrupted.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
usage() {
  local rc=${1:-2}
  if [ "$rc" = 0 ]; then sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; else sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; fi
  exit "$rc"
}
die() { echo "study: $*" >&2; exit 1; }

SPEC=input/study-cpu.ini RUNS=runs/study DOCS=docs/study/generated SLURM=0 BOOT=200 BUILD=1 FIT_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --spec) [ $# -ge 2 ] || usage; SPEC=$2; shift 2 ;;
    --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
    --docs) [ $# -ge 2 ] || usage; DOCS=$2; shift 2 ;;
    --bootstrap) [ $# -ge 2 ] || usage; BOOT=$2; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --fit-only) FIT_ONLY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "study: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -f "$SPEC" ] || { echo "study: spec '$SPEC' not found" >&2; exit 2; }
case "$BOOT" in ''|*[!0-9]*) echo "study: --bootstrap must be a non-negative integer, got '$BOOT'" >&2; exit 2 ;; esac

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$BUILD" = 1 ]; then
  echo "== study: building (scripts/build.sh release)"
  bash scripts/build.sh release || die "build failed"
fi
# FINEMOE_BIN_DIR: binaries elsewhere (e.g. a frozen copy, so that rebuilding
# this checkout during a long study does not change the trainer mid-sweep).
BIN=${FINEMOE_BIN_DIR:-$ROOT/build/release}
for b in moe-sweep moe-train moe-analyze; do [ -x "$BIN/$b" ] || die "$BIN/$b not found (build first)"; done

START=$(date +%s)
if [ "$FIT_ONLY" = 1 ]; then
  [ -f "$RUNS/sweep.tsv" ] || { echo "study: --fit-only: no $RUNS/sweep.tsv (train the study first)" >&2; exit 2; }
  echo "== study: --fit-only: fitting the runs in $RUNS as they are"
elif [ "$SLURM" = 1 ]; then
  echo "== study: expanding $SPEC into $RUNS"
  "$BIN/moe-sweep" --spec "$SPEC" --out "$RUNS" --slurm --jobs-dir "$ROOT/jobs" || die "moe-sweep failed"
  command -v sbatch >/dev/null || die "--slurm: sbatch not found"
  JOB=$(sbatch --parsable "$RUNS/sweep.sbatch") || die "sbatch $RUNS/sweep.sbatch failed"
  JOB=${JOB%%;*}
  echo "== study: Slurm array job $JOB submitted; waiting for it (logs: $RUNS/logs/)"
  while [ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ]; do sleep 20; done
  # Every run must have completed (a requeued task that ran out of retries would not have).
  bad=0
  while IFS=$'\t' read -r name _; do
    [ "$name" = name ] && continue
    st=$(h5dump -a /status "$RUNS/$name/metrics.h5" 2>/dev/null | sed -n 's/.*(0): *"\([a-z]*\)".*/\1/p' | head -n1)
    [ "$st" = completed ] || { echo "study: run $name: status '${st:-none}' (see $RUNS/logs/)" >&2; bad=1; }
  done < "$RUNS/sweep.tsv"
  [ "$bad" = 0 ] || die "some runs of job $JOB did not complete; rerun to resubmit them"
else
  echo "== study: expanding $SPEC into $RUNS"
  "$BIN/moe-sweep" --spec "$SPEC" --out "$RUNS" || die "moe-sweep failed"
  echo "== study: training every run (jobs/run_local.sh)"
  MOE_TRAIN="$BIN/moe-train" bash jobs/run_local.sh "$RUNS"
  rc=$?
  [ "$rc" = 75 ] && { echo "study: interrupted; rerun the same command to resume" >&2; exit 75; }
  [ "$rc" = 0 ] || die "training failed (run_local exit $rc; the failed runs are listed above)"
fi
TRAINED=$(date +%s)
# Training wall time per invocation, kept with the runs, so the provenance
# below still tells the training time after a rerun that only re-fits.
[ "$FIT_ONLY" = 1 ] || printf '%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$((TRAINED - START))" \
  "$([ "$SLURM" = 1 ] && echo slurm || echo local)" >> "$RUNS/study-timing.tsv"

echo "== study: fitting L(N, D, G), c free"
"$BIN/moe-analyze" "$RUNS" --out "$RUNS/analysis/free-c" --bootstrap "$BOOT" --holdout largest-n \
  || die "moe-analyze (c free) failed"
echo "== study: fitting L(N, D, G), c fixed at the corpus' entropy rate"
"$BIN/moe-analyze" "$RUNS" --out "$RUNS/analysis/fixed-c" --bootstrap "$BOOT" --holdout largest-n --fix-c entropy \
  || die "moe-analyze (c fixed) failed"
END=$(date +%s)

[ "$DOCS" = none ] && { echo "study done: $RUNS/analysis/{free-c,fixed-c}/report.md"; exit 0; }
echo "== study: writing $DOCS"
mkdir -p "$DOCS"
for fit in free-c fixed-c; do
  rm -rf "${DOCS:?}/$fit"
  mkdir -p "$DOCS/$fit"
  for f in report.md fit.json runs.csv optimal.csv; do
    [ -f "$RUNS/analysis/$fit/$f" ] && { cp "$RUNS/analysis/$fit/$f" "$DOCS/$fit/" || die "copying $fit/$f"; }
  done
  # The figures only (PNG for the repository page, SVG to zoom); the gnuplot
  # scripts and their data stay in RUNS/analysis.
  if [ -d "$RUNS/analysis/$fit/plots" ]; then
    mkdir -p "$DOCS/$fit/plots"
    cp "$RUNS/analysis/$fit/plots/"*.png "$RUNS/analysis/$fit/plots/"*.svg "$DOCS/$fit/plots/" 2>/dev/null
  fi
done
cp "$RUNS/sweep.tsv" "$SPEC" "$DOCS/"
# Header: what ran where.
{
  echo "# Study run: provenance"
  echo
  echo "- spec: \`$SPEC\`, $(($(wc -l < "$RUNS/sweep.tsv") - 1)) runs"
  echo "- trained by moe-train at commit(s): $(for d in "$RUNS"/*/metrics.h5; do h5dump -a /code_version "$d" 2>/dev/null | sed -n 's/.*(0): *"\([^"]*\)".*/\1/p' | head -n1; done | sort | uniq -c | awk '{printf "%s%s (%d runs)", (NR > 1 ? ", " : ""), $2, $1}')"
  echo "- analysed at commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
  echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1) (family $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n1), model $(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(nproc) threads available"
  echo "- ISA: $(grep -o -w -E 'avx512_bf16|avx512f|amx_tile|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "- training wall time: $(awk -F'\t' '{s += $2} END {print s}' "$RUNS/study-timing.tsv") s over $(wc -l < "$RUNS/study-timing.tsv") invocation(s) of this script (local: jobs/run_local.sh, one run at a time; slurm: the array's wall time)"
  echo "- analysis: $((END - TRAINED)) s (two fits, $BOOT bootstrap resamples each)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$DOCS/provenance.md"
echo "study done: $DOCS (reports: $DOCS/free-c/report.md, $DOCS/fixed-c/report.md)"
