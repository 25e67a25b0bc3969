#!/usr/bin/env bash
# study.miniature: scripts/study.sh on input/study-mini.ini with this build's
# binaries, then the checks of check_miniature.py on both fits' fit.json.
#   test_miniature.sh SOURCE_DIR TRAIN_BIN_DIR ANALYZE_BIN_DIR WORK_DIR
set -u
SRC=$1 TRAIN_DIR=$2 ANALYZE_DIR=$3 WORK=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK/bin"
# study.sh takes its binaries from one directory.
for b in "$TRAIN_DIR/moe-sweep" "$TRAIN_DIR/moe-train" "$ANALYZE_DIR/moe-analyze"; do
  [ -x "$b" ] || fail "$b not built"
  ln -s "$b" "$WORK/bin/"
done
FINEMOE_BIN_DIR=$WORK/bin bash "$SRC/scripts/study.sh" --spec "$SRC/input/study-mini.ini" --runs "$WORK/runs" \
  --docs none --bootstrap 40 --no-build > "$WORK/study.log" 2>&1
rc=$?
[ "$rc" = 0 ] || { tail -n 60 "$WORK/study.log"; fail "scripts/study.sh exited $rc (log: $WORK/study.log)"; }
/usr/bin/python3 "$SRC/tests/study/check_miniature.py" "$WORK/runs/analysis/free-c/fit.json" \
  "$WORK/runs/analysis/fixed-c/fit.json" || fail "the miniature's findings (above)"
echo PASS
