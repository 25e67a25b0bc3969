#!/usr/bin/env bash
# Proves the README's two Quick start commands on a *fresh* Debian 12 machine:
# builds a minimal Debian 12 root with debootstrap (from the same Debian
# mirror apt uses here), copies a clean clone of HEAD into it, and runs
#   bash scripts/demo.sh     and     bash scripts/test.sh
# inside it with chroot, printing each command's exit code and wall time.
# Packages installed by hand on this machine cannot hide a missing install
# step: inside the root there is nothing but what the scripts install.
#
#   scripts/check-fresh.sh [--only demo|test] [--keep] [--dir DIR] [--rev REV]
#
#   --only X   run one of the two commands (default: both, demo first)
#   --keep     leave the root in place afterwards (for inspection; rerunning
#              with the same --dir reuses nothing: the root is rebuilt)
#   --dir DIR  where to build the root (default /var/tmp/finemoe-fresh)
#   --rev REV  commit to clone (default HEAD; uncommitted changes are NOT
#              included, on purpose: this checks what would land)
#
# Needs root and debootstrap (apt-get install debootstrap). The environment is
# passed through as a user's login would have it, minus the caller's build
# variables; OPENBLAS_* / ONEDNN_* / OMP_* set by the machine are passed on
# unchanged (never set here). Exit status: 0 when both commands passed, 1 when
# one failed, 2 for bad usage or a root that could not be made.
set -uo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
ONLY="" KEEP=0 DIR=/var/tmp/finemoe-fresh REV=HEAD
while (($#)); do
  case "$1" in
    --only) ONLY=${2:-}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dir) DIR=${2:-}; shift 2 ;;
    --rev) REV=${2:-}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "check-fresh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|demo|test) ;; *) echo "check-fresh: --only takes demo or test, not '$ONLY'" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "check-fresh: must run as root (chroot, mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "check-fresh: debootstrap missing (apt-get install debootstrap)" >&2; exit 2; }
[ -n "$DIR" ] && [ "$DIR" != / ] || { echo "check-fresh: --dir must be a directory other than /" >&2; exit 2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHA=$(git -C "$REPO" rev-parse --verify "$REV^{commit}" 2>/dev/null) ||
  { echo "check-fresh: '$REV' is not a commit of $REPO" >&2; exit 2; }

# The Debian mirror apt uses here: first URI of a bookworm main entry in the
# deb822 or one-line sources (another mirror would give other package versions).
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' "$f"
  done
  [ -f /etc/apt/sources.list ] &&
    awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list
}
MIRROR=$(mirror | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# --- mounts: every one is undone on exit, before anything is removed --------
MOUNTS=()
mnt() { mount "$@" && MOUNTS+=("${!#}"); }
mounted_under() { awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts; }
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null; done
  # Stop daemons started inside (slurmd/slurmctld from the Slurm tests, mpirun
  # leftovers): any process whose root is the chroot.
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$DIR" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  if ((KEEP)); then echo "check-fresh: root kept in $DIR"; return; fi
  if [ -n "$(mounted_under "$DIR")" ]; then
    echo "check-fresh: not removing $DIR, still mounted: $(mounted_under "$DIR" | tr '\n' ' ')" >&2
    return
  fi
  rm -rf --one-file-system "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -e "$DIR" ]; then
  if [ -n "$(mounted_under "$DIR")" ]; then
    echo "check-fresh: $DIR has mounts from an earlier run; unmount them first" >&2; exit 2
  fi
  rm -rf --one-file-system "$DIR"
fi
mkdir -p "$DIR"

t0=$SECONDS
echo "check-fresh: debootstrap --variant=minbase bookworm $DIR $MIRROR"
if ! debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" >"$DIR.debootstrap.log" 2>&1; then
  tail -20 "$DIR.debootstrap.log" >&2
  echo "check-fresh: debootstrap failed (log: $DIR.debootstrap.log)" >&2; exit 2
fi
rm -f "$DIR.debootstrap.log"
echo "check-fresh: root made in $((SECONDS - t0)) s"

# apt inside the root uses the same Debian suites as here (security and
# updates included), and nothing else (no third-party repositories).
cat > "$DIR/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
cp -L /etc/resolv.conf "$DIR/etc/resolv.conf" 2>/dev/null || true
# /etc/hosts as Debian's installer writes it (debootstrap leaves it without
# localhost, which slurmctld needs to resolve).
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" > "$DIR/etc/hosts"

mnt -t proc proc "$DIR/proc" || exit 2
# /sys with what is mounted below it (/sys/fs/cgroup: slurmd refuses to start
# without a cgroup file system, which systemd mounts on a real machine).
mnt --rbind /sys "$DIR/sys" || exit 2
mount --make-rslave "$DIR/sys"
mnt --bind /dev "$DIR/dev" || exit 2
mnt -t devpts devpts "$DIR/dev/pts" -o newinstance,ptmxmode=0666 || true
mnt -t tmpfs shm "$DIR/dev/shm" -o mode=1777 || exit 2
mnt -t tmpfs run "$DIR/run" || exit 2

# A clean clone of the commit, as a new user would have it (git is not in a
# minbase root, so the clone is made here and copied in).
git clone -q --no-local "$REPO" "$DIR/root/finemoe" && git -C "$DIR/root/finemoe" checkout -q "$SHA" || {
  echo "check-fresh: could not clone $REPO at $SHA" >&2; exit 2; }
echo "check-fresh: cloned $(git -C "$REPO" log -1 --format='%h %s' "$SHA" | cut -c1-80)"

# A login-like environment; the machine's own BLAS / oneDNN / OpenMP settings
# pass through untouched, so the root runs the kernels this machine runs.
ENVV=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
while IFS='=' read -r k v; do
  case "$k" in OPENBLAS_*|ONEDNN_*|DNNL_*|OMP_*|GOMP_*) ENVV+=("$k=$v") ;; esac
done < <(env)

declare -A RC TIME
run_cmd() {   # run_cmd NAME SCRIPT
  local s=$SECONDS log="$DIR.$1.log"
  echo "check-fresh: [$1] bash scripts/$2   (log: $log)"
  chroot "$DIR" /usr/bin/env -i "${ENVV[@]}" /bin/bash -c "cd /root/finemoe && bash scripts/$2" </dev/null >"$log" 2>&1
  RC[$1]=$?
  TIME[$1]=$((SECONDS - s))
  tail -n 8 "$log" | sed "s/^/  [$1] /"
  echo "check-fresh: [$1] exit ${RC[$1]} after ${TIME[$1]} s"
}

[ -z "$ONLY" ] || [ "$ONLY" = demo ] && run_cmd demo demo.sh
[ -z "$ONLY" ] || [ "$ONLY" = test ] && run_cmd test test.sh

echo "check-fresh: summary for $(git -C "$REPO" rev-parse --short "$SHA") on $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
fail=0
for k in demo test; do
  [ -n "${RC[$k]+x}" ] || continue
  printf '  %-5s bash scripts/%s.sh   exit %s   %s s\n' "$k" "$k" "${RC[$k]}" "${TIME[$k]}"
  [ "${RC[$k]}" = 0 ] || fail=1
done
echo "  total $((SECONDS - t0)) s"
exit $fail
