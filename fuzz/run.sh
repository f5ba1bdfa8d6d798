#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20) and fails if any
# of them crashes (a panic, a failed invariant, a sanitizer report, a timeout
# or running out of memory).
#
#   fuzz/run.sh [SECONDS]
#
# Only the stable toolchain is needed: cargo-fuzz passes -Z flags (sanitizer,
# coverage), which stable rustc accepts under RUSTC_BOOTSTRAP=1.
# Inputs that found new coverage go to fuzz/corpus/<target> (not committed);
# the committed seeds are in fuzz/seeds/<target>. A crashing input is saved
# under fuzz/artifacts/<target>/ and this script prints how to replay it.
set -uo pipefail

budget="${1:-20}"
case "$budget" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || {
        echo "FUZZ FAILED: could not install cargo-fuzz" >&2
        exit 1
    }
fi

targets=$(cargo fuzz list) || exit 1
echo "== building fuzz targets: $(echo $targets)"
cargo fuzz build || {
    echo "FUZZ FAILED: the fuzz targets do not build" >&2
    exit 1
}

failed=()
summary=()
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="logs/$t.log"
    echo "== fuzzing $t for ${budget}s"
    # The first corpus directory receives new inputs; the seeds are read only.
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$budget" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$t: CRASHED after ${execs:-?} executions")
        echo "!! $t crashed (exit $rc); last lines of $log:" >&2
        tail -n 60 "$log" >&2
        artifact=$(sed -n 's/.*Test unit written to \(artifacts\/[^ ]*\).*/\1/p' "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            echo "!! replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact)" >&2
        fi
    else
        summary+=("$t: ok, ${execs:-?} executions in ${budget}s")
    fi
done

echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FUZZ FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#summary[@]} fuzz targets passed"
