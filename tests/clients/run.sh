#!/usr/bin/env bash
# The real-client interoperability tier: skopeo, podman, buildah, the Docker
# engine and CLI, and the curl | jq demos, each against its own berth server
# on a free loopback port. Nothing here leaves 127.0.0.1.
#
#   tests/clients/run.sh                 # every suite
#   tests/clients/run.sh skopeo docker   # suites whose file name has these words
#
# BERTH_BIN=/path/to/berth skips the build. Prints one PASS/FAIL/SKIP line
# per check, then "N skipped" and, last, "N passed, M failed". Exits non-zero
# on any failure.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$SECONDS
work=$(mktemp -d /tmp/berth-clients-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
SUITE_TIMEOUT=${SUITE_TIMEOUT:-420}

if [ -z "${BERTH_BIN:-}" ]; then
    echo "building berth (cargo build --release -p berth)"
    if ! (cd "$repo" && cargo build --release -q -p berth); then
        echo "FAIL [clients] cargo build --release -p berth"
        echo "0 passed, 1 failed"
        exit 1
    fi
    # A private copy: others may rebuild target/ while the suites run.
    cp "$repo/target/release/berth" "$work/berth"
    export BERTH_BIN="$work/berth"
fi
if [ ! -x "$BERTH_BIN" ]; then
    echo "FAIL [clients] BERTH_BIN=$BERTH_BIN is not an executable"
    echo "0 passed, 1 failed"
    exit 1
fi

export CLIENTS_RESULTS="$work/results"
: >"$CLIENTS_RESULTS"
suites=()
for f in "$here"/[0-9][0-9]-*.sh; do
    if [ $# -eq 0 ]; then
        suites+=("$f")
    else
        for w in "$@"; do
            [[ $(basename "$f") == *"$w"* ]] && { suites+=("$f"); break; }
        done
    fi
done

extra_failed=0
for s in "${suites[@]}"; do
    name=$(basename "$s" .sh)
    echo "== $name"
    before=$(wc -l <"$CLIENTS_RESULTS")
    timeout -k 30 "$SUITE_TIMEOUT" bash "$s"
    rc=$?
    after=$(wc -l <"$CLIENTS_RESULTS")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "FAIL [$name] timed out after ${SUITE_TIMEOUT}s"
        extra_failed=$((extra_failed + 1))
    elif [ "$after" -eq "$before" ]; then
        echo "FAIL [$name] exited $rc without reporting its checks"
        extra_failed=$((extra_failed + 1))
    fi
done

read -r passed failed skipped < <(awk '{ p += $2; f += $3; s += $4 } END { print p + 0, f + 0, s + 0 }' "$CLIENTS_RESULTS")
failed=$((failed + extra_failed))
echo "== clients: ${#suites[@]} suites in $((SECONDS - start))s"
echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "${#suites[@]}" -gt 0 ]
