#!/usr/bin/env bash
# bench/cache-mount.sh: a RUN with `--mount=type=cache` reusing a filled
# cache of 100 MiB vs one of 1 MiB, for berth and for BuildKit (the Docker
# engine's, DOCKER_BUILDKIT=1). The cache is bind-mounted as it is, so
# berth's time must not depend on the cache's size (big/small ~ 1.0).
#
# Each timed build changes a build arg the RUN uses (the step reruns, the
# cache mount is reused); the first build that fills the cache is not timed.
# Medians over --runs.
#
# Usage: bench/cache-mount.sh [--runs N] [--no-build] [--no-docker]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS=5
BUILD=1
DOCKER_TOO=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-docker) DOCKER_TOO=0; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
REPO=$PWD
[ "$BUILD" = 1 ] && cargo build --release -q -p berth
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/berth}
[ -x "$BERTH" ] || { echo "no berth binary at $BERTH (set BERTH_BIN)" >&2; exit 1; }
DOCKER=${DOCKER:-/usr/bin/docker}
if [ "$DOCKER_TOO" = 1 ] && [ ! -x "$DOCKER" ]; then
    echo "docker not found: pass --no-docker or install docker.io" >&2; exit 1
fi
docker() { "$DOCKER" "$@"; }

W=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/berth-bench-cachemount.XXXXXX")
DOCKERD_PID=""
cleanup() {
    [ -n "$DOCKERD_PID" ] && kill "$DOCKERD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

[ "$DOCKER_TOO" = 1 ] && start_dockerd "$W"
export DOCKER_BUILDKIT=1

# The base image: busybox-static, in both tools.
busybox_base_tar "$W"
BASE=berth-bench/base:1
ROOT=$W/root
"$BERTH" --root "$ROOT" import "$W/base.tar" "$BASE" >/dev/null
[ "$DOCKER_TOO" = 1 ] && docker import "$W/base.tar" "$BASE" >/dev/null

# context SIZE_MIB -> a context whose RUN fills (once) and then reads the
# cache's size, with a per-run build arg so the step reruns.
context() {
    local mib=$1 d=$W/ctx-$1
    mkdir -p "$d"
    cat >"$d/Dockerfile" <<DF
FROM $BASE
ARG RUN_ID
RUN --mount=type=cache,id=bench-cache-$mib-$$,target=/cache sh -c 'test -f /cache/filled || { dd if=/dev/urandom of=/cache/blob bs=1048576 count=$mib 2>/dev/null && touch /cache/filled; }; echo "\$RUN_ID \$(du -sk /cache | cut -f1)" > /seen'
DF
    echo "$d"
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
berth_build() { "$BERTH" --root "$ROOT" build --progress quiet "$@" >/dev/null; }
docker_build() { docker build -q "$@" >/dev/null; }
timed() { local t0; t0=$(now); "$@"; elapsed "$t0" "$(now)"; }

BIG=$(context 100)
SMALL=$(context 1)
# Fill both caches (untimed).
for c in "$BIG" "$SMALL"; do
    berth_build --build-arg RUN_ID=fill "$c"
    [ "$DOCKER_TOO" = 1 ] && docker_build --build-arg RUN_ID=fill "$c"
done

declare -A T
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    for size in big small; do
        c=$SMALL; [ $size = big ] && c=$BIG
        T[berth-$size]+="$(timed berth_build --build-arg "RUN_ID=$run-$RANDOM" "$c") "
        if [ "$DOCKER_TOO" = 1 ]; then
            T[buildkit-$size]+="$(timed docker_build --build-arg "RUN_ID=$run-$RANDOM" "$c") "
        fi
    done
done

printf '\n%-10s %12s %12s %14s\n' tool "100MiB(s)" "1MiB(s)" "ratio big/small"
for tool in berth buildkit; do
    [ -n "${T[$tool-big]:-}" ] || continue
    # shellcheck disable=SC2086
    mb=$(median ${T[$tool-big]}); ms=$(median ${T[$tool-small]})
    printf '%-10s %12s %12s %14s   (big: %s| small: %s)\n' "$tool" "$mb" "$ms" \
        "$(python3 -c "print(f'{$mb/$ms:.2f}')")" "${T[$tool-big]}" "${T[$tool-small]}"
done
if [ -n "${T[buildkit-big]:-}" ]; then
    # shellcheck disable=SC2086
    printf 'berth/buildkit (100 MiB cache): %s\n' \
        "$(python3 -c "print(f'{$(median ${T[berth-big]})/$(median ${T[buildkit-big]}):.2f}')")"
fi
