#!/usr/bin/env bash
# bench/run.sh: `berth run --rm IMG /bin/true` against `podman run --rm`,
# side by side in one run, on the same busybox-static image (imported into
# berth, then `berth save` -> `podman load`).
#
# Issue 10's targets, rootless: `run --rm` berth <= 0.15x podman's time,
# `exec NAME /bin/true` (into a running `sleep`) berth <= 0.2x podman's. As root the
# script runs both tools as the user `berth` (rootless, subordinate ids
# mapped), unless --as-root. Both get `--network none`: the default
# networks (slirp4netns / pasta) need /dev/net/tun, which is 0600 on the
# benchmark machine, so podman's default network cannot start rootless there
# and berth's falls back to none anyway. Which tool goes first alternates;
# medians over --runs (after one warm-up run each).
#
# Usage: bench/run.sh [--runs N] [--as-root] [--no-build]
set -euo pipefail

RUNS=15
AS_ROOT=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --as-root) AS_ROOT=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
. bench/lib.sh
[ "$BUILD" = 1 ] && cargo build --release -q -p berth
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/berth}
command -v podman >/dev/null || { echo "podman is needed (apt-get install podman)" >&2; exit 1; }

W=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/berth-bench-run.XXXXXX")
chmod 755 "$W"
AS=()
if [ "$(id -u)" = 0 ] && [ "$AS_ROOT" = 0 ]; then
    id berth >/dev/null 2>&1 || { echo "no user berth: run with --as-root, or as an ordinary user" >&2; exit 1; }
    chown berth: "$W"
    AS=(runuser -u berth --)
fi
# podman gets its own storage under $W (never the machine's: as root that
# would be /var/lib/containers, which other work uses).
cleanup() {
    as podman-in-w rm -af -t 0 >/dev/null 2>&1 || true
    as podman-in-w system reset -f >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
as() {
    local cmd=$1; shift
    if [ "$cmd" = podman ] || [ "$cmd" = podman-in-w ]; then
        "${AS[@]}" env HOME="$W/home" podman --root "$W/podman/root" --runroot "$W/podman/run" "$@"
    else
        "${AS[@]}" env HOME="$W/home" BERTH_ROOT="$W/root" BERTH_RUNTIME_DIR="$W/run" "$cmd" "$@"
    fi
}

busybox_base_tar "$W"
[ ${#AS[@]} -gt 0 ] && chown -R berth: "$W"
as mkdir -p "$W/home"
as "$BERTH" import "$W/base.tar" bench-bb:1 >/dev/null
as "$BERTH" save -o "$W/bb.tar" bench-bb:1 2>/dev/null
as podman load -q -i "$W/bb.tar" >/dev/null 2>&1
IMG_P=docker.io/library/bench-bb:1

now() { date +%s.%N; }
declare -A T
one() { # key command...
    local t0 t1
    t0=$(now)
    as "${@:2}" >/dev/null 2>&1 || { echo "failed: ${*:2}" >&2; exit 1; }
    t1=$(now)
    T[$1]+="$(echo "$t1 - $t0" | bc -l) "
}
# Warm-up: snapshots unpacked, podman's storage initialised.
as "$BERTH" run --rm --network none bench-bb:1 /bin/true
as podman run --rm --network none "$IMG_P" /bin/true 2>"$W/podman.err" ||
    { echo "podman run fails here:" >&2; cat "$W/podman.err" >&2; exit 1; }
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then
        one berth "$BERTH" run --rm --network none bench-bb:1 /bin/true
        one podman podman run --rm --network none "$IMG_P" /bin/true
    else
        one podman podman run --rm --network none "$IMG_P" /bin/true
        one berth "$BERTH" run --rm --network none bench-bb:1 /bin/true
    fi
done

# exec into a running container of each tool.
as "$BERTH" run -d --name bench-exec --network none bench-bb:1 sleep 100000 >/dev/null
as podman run -d --name bench-exec --network none "$IMG_P" sleep 100000 >/dev/null 2>&1
as "$BERTH" exec bench-exec /bin/true
as podman exec bench-exec /bin/true 2>/dev/null
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then
        one berth_exec "$BERTH" exec bench-exec /bin/true
        one podman_exec podman exec bench-exec /bin/true
    else
        one podman_exec podman exec bench-exec /bin/true
        one berth_exec "$BERTH" exec bench-exec /bin/true
    fi
done
as "$BERTH" rm -f bench-exec >/dev/null
as podman rm -f -t 0 bench-exec >/dev/null 2>&1

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
b=$(echo "${T[berth]}" | median)
p=$(echo "${T[podman]}" | median)
ratio=$(echo "$b / $p" | bc -l)
who=$([ ${#AS[@]} -gt 0 ] && echo "rootless (user berth)" || echo "as $(id -un)")
echo "| workload (n=$RUNS, seconds, median, $who) | berth | podman | berth/podman | target | result |"
echo "|---|---|---|---|---|---|"
printf '| run --rm IMG /bin/true (--network none) | %.3f | %.3f | %.2fx | <= 0.15x | %s |\n' \
    "$b" "$p" "$ratio" "$(echo "$ratio <= 0.15" | bc -l | sed 's/1/met/;s/0/missed/')"
be=$(echo "${T[berth_exec]}" | median)
pe=$(echo "${T[podman_exec]}" | median)
re=$(echo "$be / $pe" | bc -l)
printf '| exec NAME /bin/true | %.3f | %.3f | %.2fx | <= 0.2x | %s |\n' \
    "$be" "$pe" "$re" "$(echo "$re <= 0.2" | bc -l | sed 's/1/met/;s/0/missed/')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
