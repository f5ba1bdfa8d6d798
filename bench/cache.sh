#!/usr/bin/env bash
# bench/cache.sh: warm rebuild from a registry cache into an empty local
# root, `berth build --cache-from R` against the Docker engine's BuildKit
# (`DOCKER_BUILDKIT=1 docker build --cache-from R` after removing the images
# and the builder cache), on the `export` and `parallel` scenarios of
# ../shared/bench/scenarios. Both caches are inline caches of images pushed
# to one local registry (berth serve); the base image (busybox-static) is
# pulled from there too, so the rebuilding side starts from nothing.
#
#   export-warm     384 MiB of layers, all cached      berth <= 0.5x
#   parallel-warm   three stages + COPY --from, cached berth <= 0.5x
#
# Medians over --runs; which tool goes first alternates.
#
# Usage: bench/cache.sh [--runs N] [--only NAME] [--no-build] [--scenarios DIR]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS=3
ONLY=""
BUILD=1
SCEN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --scenarios) SCEN=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
REPO=$PWD
[ -n "$SCEN" ] || SCEN=$REPO/../shared/bench/scenarios
[ -d "$SCEN" ] || { echo "scenarios not found at $SCEN (pass --scenarios DIR)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
[ "$BUILD" = 1 ] && cargo build --release -q -p berth
BERTH=$TARGET/release/berth
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$DOCKER" ] || { echo "docker is needed (apt-get install docker.io)" >&2; exit 1; }
docker() { "$DOCKER" "$@"; }

W=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/berth-bench-cache.XXXXXX")
PIDS=()
DOCKERD_PID=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$DOCKERD_PID" ] && kill "$DOCKERD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

start_dockerd "$W"
export DOCKER_BUILDKIT=1

# The registry between the "machines": berth serve on a free port
# (127.0.0.1 is plain HTTP for both tools).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BERTH" --root "$W/registry" --log-level error serve --addr "127.0.0.1:$PORT" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.05; done
REG=127.0.0.1:$PORT

# The base image: busybox-static, pushed to the registry once.
busybox_base_tar "$W"
BASE=$REG/bench/base:1
SOURCE_DATE_EPOCH=1600000000 "$BERTH" --root "$W/seed" import "$W/base.tar" "$BASE" >/dev/null
"$BERTH" --root "$W/seed" push "$BASE" >/dev/null

prepare() { # scenario -> context dir with FROM BASE replaced
    local s=$1 d=$W/ctx-$1
    rm -rf "$d"; mkdir -p "$d"
    sed "s#^FROM BASE#FROM $BASE#" "$SCEN/$s/Dockerfile" >"$d/Dockerfile"
    echo "$d"
}
prune_docker() {
    # Every image of the bench registry (`REG/*` would not match `REG/a/b`).
    docker image ls --format '{{.Repository}}:{{.Tag}}' | grep "^$REG/" | xargs -r docker rmi -f >/dev/null 2>&1 || true
    docker builder prune -af >/dev/null 2>&1 || true
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
timed() { local t0; t0=$(now); "$@"; elapsed "$t0" "$(now)"; }

declare -A B D
record() { B[$1]+="$2 "; D[$1]+="$3 "; }
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# One scenario: both tools build once with an inline cache and push; then,
# every run, each rebuilds from its pushed cache into an empty state.
for s in export parallel; do
    want "$s-warm" || continue
    ctx=$(prepare "$s")
    echo "seeding $s" >&2
    "$BERTH" --root "$W/seed" build --progress quiet -t "$REG/berth/$s:1" --push \
        --build-arg BUILDKIT_INLINE_CACHE=1 "$ctx" >/dev/null
    prune_docker
    docker build -q -t "$REG/docker/$s:1" --build-arg BUILDKIT_INLINE_CACHE=1 "$ctx" >/dev/null
    docker push -q "$REG/docker/$s:1" >/dev/null
    for run in $(seq "$RUNS"); do
        echo "$s run $run/$RUNS" >&2
        ROOT=$W/root-$run
        rm -rf "$ROOT"; prune_docker
        run_berth() { "$BERTH" --root "$ROOT" build --progress quiet -t "berth-warm/$s:$run" --cache-from "$REG/berth/$s:1" "$ctx" >/dev/null; }
        run_docker() { docker build -q -t "$REG/docker-warm/$s:$run" --cache-from "$REG/docker/$s:1" "$ctx" >/dev/null; }
        if [ $((run % 2)) = 1 ]; then
            tb=$(timed run_berth); td=$(timed run_docker)
        else
            td=$(timed run_docker); tb=$(timed run_berth)
        fi
        record "$s-warm" "$tb" "$td"
        # Not timed: the rebuilt image is really in the empty root (every
        # blob re-hashed) and nothing ran.
        "$BERTH" --root "$ROOT" fsck >/dev/null
        [ "$run" = 1 ] && echo "  berth root after the warm rebuild: $(du -sh "$ROOT/blobs" | cut -f1) of blobs" >&2
        rm -rf "$ROOT"
    done
done

printf '\n%-16s %10s %10s %8s %8s\n' scenario "berth(s)" "buildkit" ratio target
for s in export-warm parallel-warm; do
    [ -n "${B[$s]:-}" ] || continue
    # shellcheck disable=SC2086
    mb=$(median ${B[$s]}); md=$(median ${D[$s]})
    printf '%-16s %10s %10s %8s %8s   (berth: %s| buildkit: %s)\n' "$s" "$mb" "$md" "$(python3 -c "print(f'{$mb/$md:.2f}')")" 0.5 "${B[$s]}" "${D[$s]}"
done
