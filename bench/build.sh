#!/usr/bin/env bash
# bench/build.sh: `berth build` against BuildKit (the Docker engine's, with
# DOCKER_BUILDKIT=1), side by side in one run, on the scenarios of
# ../shared/bench/scenarios (FROM BASE = a busybox-static image imported
# into both):
#
#   parallel-cold    three 2 s stages that must overlap     berth <= 0.8x
#   parallel-noop    rebuild with nothing changed           berth <= 0.25x
#   bigctx-noop      5000 files + 200 MiB context, no-op    berth <= 0.25x
#   bigctx-change    one small context file changed         berth <= 0.5x
#   export-push      cold build of 384 MiB of layers + push
#                    to a local registry (berth serve)      berth <= 0.5x
#
# Medians over --runs; which tool goes first alternates.
#
# Usage: bench/build.sh [--runs N] [--only NAME] [--no-build] [--scenarios DIR]
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
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
REPO=$PWD
[ -n "$SCEN" ] || SCEN=$REPO/../shared/bench/scenarios
[ -d "$SCEN" ] || { echo "scenarios not found at $SCEN (pass --scenarios DIR)" >&2; exit 1; }
[ "$BUILD" = 1 ] && cargo build --release -q -p berth
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/berth}
# Debian's docker.io client: its `docker build` speaks to the engine's BuildKit
# without buildx.
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$DOCKER" ] || { echo "docker is needed (apt-get install docker.io)" >&2; exit 1; }
docker() { "$DOCKER" "$@"; }

W=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/berth-bench-build.XXXXXX")
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

# The base image: busybox-static, in both tools.
busybox_base_tar "$W"
BASE=berth-bench/base:1
docker import "$W/base.tar" "$BASE" >/dev/null

fresh_root() { # -> sets ROOT
    ROOT=$W/root-$RANDOM$RANDOM
    "$BERTH" --root "$ROOT" import "$W/base.tar" "$BASE" >/dev/null
}
prune_docker() {
    docker builder prune -af >/dev/null 2>&1 || true
    docker image ls -q 'berth-bench/*' | grep -v "^$(docker image inspect -f '{{.Id}}' "$BASE" | cut -c8-19)" | xargs -r docker rmi -f >/dev/null 2>&1 || true
}

prepare() { # scenario -> context dir with FROM BASE replaced
    local s=$1 d=$W/ctx-$1
    rm -rf "$d"; mkdir -p "$d"
    sed "s#^FROM BASE#FROM $BASE#" "$SCEN/$s/Dockerfile" >"$d/Dockerfile"
    if [ "$s" = bigctx ]; then bash "$SCEN/gen-bigctx.sh" "$d" >/dev/null; fi
    echo "$d"
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

berth_build() { "$BERTH" --root "$ROOT" build --progress quiet "$@" >/dev/null; }
docker_build() { docker build -q "$@" >/dev/null; }

declare -A B D
record() { B[$1]+="$2 "; D[$1]+="$3 "; }

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

time_berth() { local t0; t0=$(now); "$@"; elapsed "$t0" "$(now)"; }

for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    if want parallel-cold || want parallel-noop; then
        ctx=$(prepare parallel)
        fresh_root; prune_docker
        if [ $((run % 2)) = 1 ]; then
            tb=$(time_berth berth_build -t berth-bench/parallel "$ctx"); td=$(time_berth docker_build -t berth-bench/parallel "$ctx")
        else
            td=$(time_berth docker_build -t berth-bench/parallel "$ctx"); tb=$(time_berth berth_build -t berth-bench/parallel "$ctx")
        fi
        record parallel-cold "$tb" "$td"
        tb=$(time_berth berth_build -t berth-bench/parallel "$ctx"); td=$(time_berth docker_build -t berth-bench/parallel "$ctx")
        record parallel-noop "$tb" "$td"
    fi
    if want bigctx-noop || want bigctx-change; then
        [ -d "$W/ctx-bigctx" ] || prepare bigctx >/dev/null
        ctx=$W/ctx-bigctx
        fresh_root; prune_docker
        berth_build -t berth-bench/bigctx "$ctx"; docker_build -t berth-bench/bigctx "$ctx"
        if [ $((run % 2)) = 1 ]; then
            tb=$(time_berth berth_build -t berth-bench/bigctx "$ctx"); td=$(time_berth docker_build -t berth-bench/bigctx "$ctx")
        else
            td=$(time_berth docker_build -t berth-bench/bigctx "$ctx"); tb=$(time_berth berth_build -t berth-bench/bigctx "$ctx")
        fi
        record bigctx-noop "$tb" "$td"
        echo "change $run $RANDOM" >>"$ctx/d7/f13"
        if [ $((run % 2)) = 1 ]; then
            tb=$(time_berth berth_build -t berth-bench/bigctx "$ctx"); td=$(time_berth docker_build -t berth-bench/bigctx "$ctx")
        else
            td=$(time_berth docker_build -t berth-bench/bigctx "$ctx"); tb=$(time_berth berth_build -t berth-bench/bigctx "$ctx")
        fi
        record bigctx-change "$tb" "$td"
    fi
    if want export-push; then
        ctx=$(prepare export)
        PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        "$BERTH" --root "$W/registry-$run" --log-level error serve --addr "127.0.0.1:$PORT" &
        PIDS+=($!)
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.05; done
        fresh_root; prune_docker
        run_berth() { berth_build -t "127.0.0.1:$PORT/berth/export:$run" --push "$ctx"; }
        run_docker() { docker_build -t "127.0.0.1:$PORT/docker/export:$run" "$ctx" && docker push -q "127.0.0.1:$PORT/docker/export:$run" >/dev/null; }
        if [ $((run % 2)) = 1 ]; then
            tb=$(time_berth run_berth); td=$(time_berth run_docker)
        else
            td=$(time_berth run_docker); tb=$(time_berth run_berth)
        fi
        record export-push "$tb" "$td"
        rm -rf "$ROOT"
    fi
    rm -rf "$W"/root-*
done

printf '\n%-16s %10s %10s %8s %8s\n' scenario "berth(s)" "buildkit" ratio target
for s in parallel-cold parallel-noop bigctx-noop bigctx-change export-push; do
    [ -n "${B[$s]:-}" ] || continue
    # shellcheck disable=SC2086
    mb=$(median ${B[$s]}); md=$(median ${D[$s]})
    case $s in parallel-cold) target=0.8 ;; *-noop) target=0.25 ;; *) target=0.5 ;; esac
    printf '%-16s %10s %10s %8s %8s   (berth: %s| buildkit: %s)\n' "$s" "$mb" "$md" "$(python3 -c "print(f'{$mb/$md:.2f}')")" "$target" "${B[$s]}" "${D[$s]}"
done
