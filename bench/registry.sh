#!/usr/bin/env bash
# bench/registry.sh: `berth serve` against distribution (Debian's
# docker-registry, 2.8) side by side, on the same machine in the same run.
#
# Each server gets its own loopback port and its own temporary storage root;
# distribution gets a generated config (filesystem storage in the temp dir,
# deletes enabled, in-memory blob descriptor cache as in Debian's example
# config, log level error, access log off). Every workload runs against both,
# alternating which one goes first, and the table reports medians and
# berth/distribution ratios against the targets of issue 2:
#
#   push    256 MiB blob, POST + monolithic PUT ?digest=    berth >= 2x MiB/s
#   pull    256 MiB blob, GET to /dev/null                  berth >= 1.5x MiB/s
#   manifest GET by tag, wrk -c64 -t2 -d10s --latency       berth >= 3x req/s, p99 <= 1/3
#   images  16 clients pushing 200 small images (total)     berth <= 0.5x the time
#   heavy   16 clients x 200 images each (3200)             berth <= 0.5x the time
#   memory  peak RSS (VmHWM) of each server per workload    berth <= 0.5x
#
# Peak memory: before each workload the servers' high-water marks are reset
# (echo 5 > /proc/PID/clear_refs) and VmHWM is read when it ends.
#
# Usage: bench/registry.sh [options]
#   --runs N          runs of the blob push and pull workloads (default 5)
#   --wrk-runs N      runs of the manifest wrk workload (default 3)
#   --image-runs N    runs of the 16-client/200-image push (default 3)
#   --heavy-runs N    runs of the 16-client/3200-image push (default 1; 0 skips)
#   --blob-mib N      size of the big blob (default 256)
#   --wrk-seconds N   duration of each wrk run (default 10)
#   --only LIST       comma list of push,pull,manifest,images,heavy (default all)
#   --no-build        use the existing target/release binaries
#   --markdown FILE   also write the summary table as Markdown to FILE
#   --results FILE    also write every run's raw numbers (TSV: metric, server, value)
#   --keep            keep the temporary directory (storage roots, logs)
#   -h, --help        this text
# Environment: BENCH_TMPDIR (where the storage roots go; default $TMPDIR or
# /tmp), DISTRIBUTION (default docker-registry).
set -euo pipefail

RUNS=5
WRK_RUNS=3
IMG_RUNS=3
HEAVY_RUNS=1
BLOB_MIB=256
WRK_SECS=10
ONLY="push,pull,manifest,images,heavy"
BUILD=1
KEEP=0
MARKDOWN=""
RESULTS=""

usage() { sed -n '/^# Usage:/,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --wrk-runs) WRK_RUNS=$2; shift 2 ;;
        --image-runs) IMG_RUNS=$2; shift 2 ;;
        --heavy-runs) HEAVY_RUNS=$2; shift 2 ;;
        --blob-mib) BLOB_MIB=$2; shift 2 ;;
        --wrk-seconds) WRK_SECS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --markdown) MARKDOWN=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "registry.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BERTH=$TARGET_DIR/release/berth
LOADGEN=$TARGET_DIR/release/loadgen
DISTRIBUTION=${DISTRIBUTION:-docker-registry}
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json

for tool in curl jq wrk sha256sum "$DISTRIBUTION"; do
    command -v "$tool" >/dev/null || { echo "registry.sh: $tool is required" >&2; exit 1; }
done
enabled() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '%s\n' "$*" >&2; }

if [ "$BUILD" = 1 ]; then
    log "== building berth and loadgen (release)"
    (cd "$REPO_ROOT" && cargo build --release -q -p berth -p loadgen)
fi
[ -x "$BERTH" ] && [ -x "$LOADGEN" ] || { echo "registry.sh: build berth and loadgen first" >&2; exit 1; }

W=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/berth-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        if port_free "$p" && [ "$p" != "${1:-}" ]; then echo "$p"; return; fi
    done
    echo "registry.sh: no free port" >&2; exit 1
}

# ---- servers ---------------------------------------------------------------
B_PORT=$(pick_port)
D_PORT=$(pick_port "$B_PORT")
B_URL=http://127.0.0.1:$B_PORT
D_URL=http://127.0.0.1:$D_PORT
mkdir -p "$W/berth-root" "$W/dist-root"

cat >"$W/distribution.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/dist-root
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$D_PORT
EOF

"$BERTH" --root "$W/berth-root" --log-level warn serve --addr "127.0.0.1:$B_PORT" \
    >"$W/berth.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
"$DISTRIBUTION" serve "$W/distribution.yml" >"$W/distribution.log" 2>&1 &
D_PID=$!
PIDS+=("$D_PID")

wait_ready() { # url pid logfile
    for _ in $(seq 100); do
        if curl -fsS -o /dev/null "$1/v2/" 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "server died:" >&2; cat "$3" >&2; exit 1; }
        sleep 0.1
    done
    echo "server at $1 did not come up:" >&2; cat "$3" >&2; exit 1
}
wait_ready "$B_URL" "$B_PID" "$W/berth.log"
wait_ready "$D_URL" "$D_PID" "$W/distribution.log"
log "== berth        pid $B_PID at $B_URL  ($("$BERTH" --version))"
log "== distribution pid $D_PID at $D_URL  ($("$DISTRIBUTION" --version))"
log "== storage in $W ($(df -h --output=source,fstype "$W" | tail -1 | tr -s ' '))"

NAMES=(berth distribution)
url_of() { if [ "$1" = berth ]; then echo "$B_URL"; else echo "$D_URL"; fi; }
pid_of() { if [ "$1" = berth ]; then echo "$B_PID"; else echo "$D_PID"; fi; }
# Both servers, in an order that alternates with the run number.
order() { if [ $(($1 % 2)) = 1 ]; then echo berth distribution; else echo distribution berth; fi; }
check_alive() {
    for n in "${NAMES[@]}"; do
        kill -0 "$(pid_of "$n")" 2>/dev/null || { echo "$n died" >&2; exit 1; }
    done
}

# ---- results ---------------------------------------------------------------
# $W/results: "metric<TAB>server<TAB>value" per run; medians are taken at the end.
RES=$W/results
: >"$RES"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }

MEM_RESET=1
mem_reset() {
    for n in "${NAMES[@]}"; do
        echo 5 >"/proc/$(pid_of "$n")/clear_refs" 2>/dev/null || MEM_RESET=0
    done
}
mem_record() { # workload
    local n kb
    for n in "${NAMES[@]}"; do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$(pid_of "$n")/status")
        record "mem_$1" "$n" "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')"
    done
}
mem_reset
mem_record idle

# Server CPU time (user + system, ms), a steadier measure than wall time on a
# busy machine: recorded per run as metric cpu_<workload>.
TICK_MS=$(awk -v h="$(getconf CLK_TCK)" 'BEGIN { print 1000 / h }')
cpu_ms() { awk -v t="$TICK_MS" '{ printf "%d\n", ($14 + $15) * t }' "/proc/$(pid_of "$1")/stat"; }

# ---- big blob push / pull ---------------------------------------------------
BLOB=$W/blob.bin
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
mibps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", b / 1048576 / t }'; }

new_blob() { # fresh random content
    head -c "$BLOB_BYTES" /dev/urandom >"$BLOB"
    BLOB_DIGEST=sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)
}

# POST then monolithic PUT <location>?digest= (distribution's monolithic
# path). Prints the seconds of both requests (curl's own timers).
push_two_step() { # url repo
    local hdr t1 loc code t2 sep
    hdr=$(curl -sS -X POST -H 'Content-Length: 0' -D - -o /dev/null \
        -w 'TIME %{time_total}\n' "$1/v2/$2/blobs/uploads/" | tr -d '\r')
    t1=$(awk '$1 == "TIME" {print $2}' <<<"$hdr")
    loc=$(awk 'tolower($1) == "location:" {print $2}' <<<"$hdr")
    [ -n "$loc" ] || { echo "POST upload to $1 gave no Location:" >&2; echo "$hdr" >&2; exit 1; }
    case "$loc" in /*) loc=$1$loc ;; esac
    case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
    read -r code t2 < <(curl -sS -X PUT -T "$BLOB" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -o "$W/put.out" \
        -w '%{http_code} %{time_total}\n' "$loc${sep}digest=$BLOB_DIGEST")
    [ "$code" = 201 ] || { echo "PUT to $1 returned $code:" >&2; cat "$W/put.out" >&2; exit 1; }
    awk -v a="$t1" -v b="$t2" 'BEGIN { print a + b }'
}

# berth's single-request monolithic upload: POST ?digest= with the body.
push_single() { # url repo
    local code t
    # (--request-target: with -T, curl would append the file name to a URL
    # whose path ends in a slash.)
    read -r code t < <(curl -sS -X POST -T "$BLOB" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -o "$W/put.out" \
        -w '%{http_code} %{time_total}\n' \
        --request-target "/v2/$2/blobs/uploads/?digest=$BLOB_DIGEST" "$1/")
    [ "$code" = 201 ] || { echo "POST ?digest= to $1 returned $code:" >&2; cat "$W/put.out" >&2; exit 1; }
    echo "$t"
}

pull() { # url repo digest
    local code size t
    read -r code size t < <(curl -sS -o /dev/null \
        -w '%{http_code} %{size_download} %{time_total}\n' "$1/v2/$2/blobs/$3")
    [ "$code" = 200 ] && [ "$size" = "$BLOB_BYTES" ] ||
        { echo "GET blob from $1: status $code, $size bytes" >&2; exit 1; }
    echo "$t"
}

RUN_ID=$(date +%s)
if enabled push; then
    log "== push: ${BLOB_MIB} MiB blob, POST + PUT ?digest=, $RUNS runs (fresh random blob, new repo each)"
    mem_reset
    for r in $(seq "$RUNS"); do
        new_blob
        line="   run $r:"
        for n in $(order "$r"); do
            sync
            c0=$(cpu_ms "$n")
            t=$(push_two_step "$(url_of "$n")" "bench/push-$RUN_ID-$r")
            record cpu_push "$n" "$(( $(cpu_ms "$n") - c0 ))"
            record push "$n" "$(mibps "$BLOB_BYTES" "$t")"
            line="$line $n $(mibps "$BLOB_BYTES" "$t") MiB/s;"
        done
        # berth's single-request form, with different content (new digest).
        printf '%08x' "$r$RANDOM" | dd of="$BLOB" conv=notrunc status=none
        BLOB_DIGEST=sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)
        sync
        t=$(push_single "$B_URL" "bench/post-$RUN_ID-$r")
        record push_post berth "$(mibps "$BLOB_BYTES" "$t")"
        log "$line berth POST?digest= $(mibps "$BLOB_BYTES" "$t") MiB/s"
    done
    mem_record push
    check_alive
fi

if enabled pull; then
    log "== pull: ${BLOB_MIB} MiB blob, GET to /dev/null, $RUNS runs"
    new_blob
    for n in "${NAMES[@]}"; do
        push_two_step "$(url_of "$n")" "bench/pull-$RUN_ID" >/dev/null
        # Untimed check of the content, which also warms both the same way.
        got=$(curl -fsS "$(url_of "$n")/v2/bench/pull-$RUN_ID/blobs/$BLOB_DIGEST" | sha256sum | cut -d' ' -f1)
        [ "sha256:$got" = "$BLOB_DIGEST" ] || { echo "$n served wrong content" >&2; exit 1; }
    done
    rm -f "$BLOB"
    mem_reset
    for r in $(seq "$RUNS"); do
        line="   run $r:"
        for n in $(order "$r"); do
            c0=$(cpu_ms "$n")
            t=$(pull "$(url_of "$n")" "bench/pull-$RUN_ID" "$BLOB_DIGEST")
            record cpu_pull "$n" "$(( $(cpu_ms "$n") - c0 ))"
            record pull "$n" "$(mibps "$BLOB_BYTES" "$t")"
            line="$line $n $(mibps "$BLOB_BYTES" "$t") MiB/s;"
        done
        log "$line"
    done
    mem_record pull
    check_alive
fi
rm -f "$BLOB"

# ---- manifest GET by tag under wrk ------------------------------------------
to_ms() { # wrk latency like 812.00us, 1.23ms, 2.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}
if enabled manifest; then
    log "== manifest GET by tag: wrk -c64 -t2 -d${WRK_SECS}s --latency, $WRK_RUNS runs"
    for n in "${NAMES[@]}"; do
        "$LOADGEN" push-images --registry "$(url_of "$n")" --clients 1 --images 1 \
            --repo-prefix "bench/manifest-$RUN_ID" >/dev/null
        code=$(curl -sS -o /dev/null -w '%{http_code} %{content_type}' -H "Accept: $MANIFEST_TYPE" \
            "$(url_of "$n")/v2/bench/manifest-$RUN_ID/c0/manifests/i0")
        [ "$code" = "200 $MANIFEST_TYPE" ] || { echo "$n: manifest GET gave $code" >&2; exit 1; }
    done
    mem_reset
    for r in $(seq "$WRK_RUNS"); do
        line="   run $r:"
        for n in $(order "$r"); do
            out=$W/wrk-$n-$r.txt
            c0=$(cpu_ms "$n")
            wrk -c64 -t2 -d"${WRK_SECS}s" --latency -H "Accept: $MANIFEST_TYPE" \
                "$(url_of "$n")/v2/bench/manifest-$RUN_ID/c0/manifests/i0" >"$out"
            if grep -q -e 'Non-2xx' -e 'Socket errors' "$out"; then
                log "   warning: $n: $(grep -e 'Non-2xx' -e 'Socket errors' "$out" | tr -s ' ')"
            fi
            c1=$(cpu_ms "$n")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            total=$(awk '/requests in/ {print $1}' "$out")
            record cpu_manifest "$n" "$(awk -v c=$((c1 - c0)) -v n="$total" 'BEGIN { printf "%.1f", c * 1000 / n }')"
            p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
            p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
            record manifest_rps "$n" "$rps"
            record manifest_p99 "$n" "$p99"
            record manifest_p50 "$n" "$p50"
            line="$line $n $rps req/s p50 ${p50}ms p99 ${p99}ms;"
        done
        log "$line"
    done
    mem_record manifest
    check_alive
fi

# ---- many clients pushing small images ---------------------------------------
push_images() { # metric runs extra-args...
    local metric=$1 runs=$2 r n json secs
    shift 2
    mem_reset
    for r in $(seq "$runs"); do
        line="   run $r:"
        for n in $(order "$r"); do
            c0=$(cpu_ms "$n")
            json=$("$LOADGEN" push-images --registry "$(url_of "$n")" --clients 16 --layers 3 \
                --min-size 1024 --max-size 16384 --repo-prefix "bench/$metric-$RUN_ID-$r" "$@")
            secs=$(jq -r '.seconds' <<<"$json")
            record "cpu_$metric" "$n" "$(( $(cpu_ms "$n") - c0 ))"
            record "$metric" "$n" "$secs"
            line="$line $n $(printf '%.2f' "$secs") s ($(jq -r '"\(.images) images, \(.requests) requests, image p99 \(.image_p99_ms | floor) ms"' <<<"$json"));"
        done
        log "$line"
    done
    mem_record "$metric"
    check_alive
}
if enabled images; then
    log "== images: 16 clients pushing 200 small images in total (3 layers of 1-16 KiB + config + manifest), $IMG_RUNS runs"
    push_images images "$IMG_RUNS" --images 200
fi
if enabled heavy && [ "$HEAVY_RUNS" -gt 0 ]; then
    log "== heavy: 16 clients x 200 small images each (3200), $HEAVY_RUNS runs"
    push_images heavy "$HEAVY_RUNS" --images 200 --per-client
fi

# ---- summary -------------------------------------------------------------------
median() { # metric server
    awk -F'\t' -v m="$1" -v s="$2" '$1 == m && $2 == s {print $3}' "$RES" | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print ""; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            a = m < 0 ? -m : m
            if (a >= 1000) printf "%.0f\n", m
            else if (a >= 100) printf "%.1f\n", m
            else if (a >= 1) printf "%.2f\n", m
            else printf "%.3g\n", m }'
}
peak() { # metric server: max, for memory
    awk -F'\t' -v m="$1" -v s="$2" '$1 == m && $2 == s {print $3}' "$RES" | sort -g | tail -1
}
count() { awk -F'\t' -v m="$1" '$1 == m && $2 == "berth"' "$RES" | wc -l; }

ROWS=()
row() { # label unit berth dist target(">=x" or "<=x" or "") 
    local label=$1 unit=$2 b=$3 d=$4 target=$5 ratio verdict
    if [ -z "$b" ] || [ -z "$d" ]; then
        ratio=-
    else
        ratio=$(awk -v b="$b" -v d="$d" 'BEGIN { if (d == 0) print "-"; else printf "%.2f", b / d }')
    fi
    verdict=""
    if [ -n "$target" ] && [ "$ratio" != - ]; then
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {
            op = substr(t, 1, 2); x = substr(t, 3) + 0
            ok = (op == ">=") ? (r >= x) : (r <= x)
            print ok ? "PASS" : "MISS" }')
    fi
    ROWS+=("$label|$unit|${b:--}|${d:--}|$ratio|${target:-}|$verdict")
}

if enabled push; then
    row "push ${BLOB_MIB} MiB, POST+PUT (n=$(count push))" "MiB/s" "$(median push berth)" "$(median push distribution)" ">=2"
    row "push ${BLOB_MIB} MiB, berth POST?digest= vs dist POST+PUT" "MiB/s" "$(median push_post berth)" "$(median push distribution)" ""
fi
if enabled pull; then
    row "pull ${BLOB_MIB} MiB (n=$(count pull))" "MiB/s" "$(median pull berth)" "$(median pull distribution)" ">=1.5"
fi
if enabled manifest; then
    row "manifest GET c64 ${WRK_SECS}s (n=$(count manifest_rps))" "req/s" "$(median manifest_rps berth)" "$(median manifest_rps distribution)" ">=3"
    row "manifest GET p99" "ms" "$(median manifest_p99 berth)" "$(median manifest_p99 distribution)" "<=0.333"
    row "manifest GET p50" "ms" "$(median manifest_p50 berth)" "$(median manifest_p50 distribution)" ""
fi
if enabled images; then
    row "16 clients, 200 images total (n=$(count images))" "s" "$(median images berth)" "$(median images distribution)" "<=0.5"
fi
if enabled heavy && [ "$HEAVY_RUNS" -gt 0 ]; then
    row "16 clients x 200 images = 3200 (n=$(count heavy))" "s" "$(median heavy berth)" "$(median heavy distribution)" "<=0.5"
fi
for w in push pull manifest images heavy; do
    if awk -F'\t' -v m="cpu_$w" '$1 == m {f = 1} END {exit !f}' "$RES"; then
        case $w in
            manifest) unit="us/req" ;;
            push|pull) unit="ms/op" ;;
            *) unit="ms/run" ;;
        esac
        row "server CPU (user+sys), $w" "$unit" "$(median "cpu_$w" berth)" "$(median "cpu_$w" distribution)" ""
    fi
done
row "peak RSS at idle (startup)" "MiB" "$(peak mem_idle berth)" "$(peak mem_idle distribution)" ""
for w in push pull manifest images heavy; do
    if awk -F'\t' -v m="mem_$w" '$1 == m {f = 1} END {exit !f}' "$RES"; then
        row "peak RSS (VmHWM) during $w" "MiB" "$(peak "mem_$w" berth)" "$(peak "mem_$w" distribution)" "<=0.5"
    fi
done
all_peak() { awk -F'\t' -v s="$1" '$1 ~ /^mem_/ && $2 == s {print $3}' "$RES" | sort -g | tail -1; }
row "peak RSS (VmHWM) over all workloads" "MiB" "$(all_peak berth)" "$(all_peak distribution)" "<=0.5"
[ "$MEM_RESET" = 1 ] || log "note: could not reset VmHWM (clear_refs); memory rows are lifetime peaks"

{
    echo
    printf '%-58s %-6s %12s %12s %7s %8s  %s\n' metric unit berth distribution ratio target result
    printf '%s\n' "$(printf '%.0s-' $(seq 118))"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d e f g <<<"$r"
        printf '%-58s %-6s %12s %12s %7s %8s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g"
    done
    echo
    echo "ratio = berth / distribution; values are medians (memory: maximum) over the runs."
    echo "PASS $(printf '%s\n' "${ROWS[@]}" | grep -c '|PASS$' || true), MISS $(printf '%s\n' "${ROWS[@]}" | grep -c '|MISS$' || true)"
}

if [ -n "$MARKDOWN" ]; then
    {
        echo "| metric | unit | berth | distribution | berth/distribution | target | result |"
        echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
        for r in "${ROWS[@]}"; do
            IFS='|' read -r a b c d e f g <<<"$r"
            echo "| $a | $b | $c | $d | $e | ${f:-} | ${g:-} |"
        done
    } >"$MARKDOWN"
    log "markdown table written to $MARKDOWN"
fi
if [ -n "$RESULTS" ]; then
    cp "$RES" "$RESULTS"
    log "raw results written to $RESULTS"
fi
