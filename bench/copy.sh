#!/usr/bin/env bash
# bench/copy.sh: `berth copy` against `skopeo copy`, side by side in one run.
#
# The targets of issues 3 and 9, on an image of 8 layers x 32 MiB (random,
# so nothing compresses) held by a local registry (`berth serve`; both tools
# talk to the same servers, so the registry's speed is the same for both):
#
#   reg2reg  copy between two local registries            berth <= 0.4x skopeo's time
#   pull     registry -> OCI layout (skopeo: oci:DIR)     berth <= 0.5x skopeo's time
#   local    `berth pull` into a local store root, against
#            skopeo's registry -> OCI layout               berth <= 0.4x skopeo's time
#
# Every run copies to a fresh repository / directory; which tool goes first
# alternates. Medians over --runs.
#
# Usage: bench/copy.sh [--runs N] [--layers N] [--layer-mib N] [--no-build]
set -euo pipefail

RUNS=5
LAYERS=8
LAYER_MIB=32
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --layers) LAYERS=$2; shift 2 ;;
        --layer-mib) LAYER_MIB=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
[ "$BUILD" = 1 ] && cargo build --release -q -p berth
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/berth}
command -v skopeo >/dev/null || { echo "skopeo is needed (apt-get install skopeo)" >&2; exit 1; }

W=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/berth-bench-copy.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_server() { # name -> sets PORT (not a subshell: the server must outlive it)
    PORT=$(free_port)
    "$BERTH" --root "$W/$1" --log-level error serve --addr "127.0.0.1:$PORT" &
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.05; done
}
start_server src; SRC=127.0.0.1:$PORT
# Every registry-to-registry copy goes to a new, empty destination registry,
# so neither tool can skip or mount blobs an earlier copy left there.
DST_PID=""
fresh_dst() {
    [ -n "$DST_PID" ] && { kill "$DST_PID"; wait "$DST_PID" 2>/dev/null || true; rm -rf "$W/dst"; }
    start_server dst; DST=127.0.0.1:$PORT; DST_PID=${PIDS[-1]}
    # skopeo remembers where it saw blobs and would try to mount them.
    rm -f /var/lib/containers/cache/blob-info-cache-v1.* "$HOME"/.local/share/containers/cache/blob-info-cache-v1.* 2>/dev/null || true
}
fresh_dst

# The image: an OCI layout written by hand, pushed to SRC.
L=$W/layout
mkdir -p "$L/blobs/sha256"
layers=""
diffids=""
for i in $(seq "$LAYERS"); do
    head -c "$((LAYER_MIB << 20))" /dev/urandom > "$W/layer"
    d=$(sha256sum "$W/layer" | cut -d' ' -f1)
    mv "$W/layer" "$L/blobs/sha256/$d"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$d\",\"size\":$((LAYER_MIB << 20))}"
    diffids+="${diffids:+,}\"sha256:$d\""
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffids" > "$W/config"
cd_=$(sha256sum "$W/config" | cut -d' ' -f1); cs=$(stat -c %s "$W/config"); mv "$W/config" "$L/blobs/sha256/$cd_"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cd_" "$cs" "$layers" > "$W/manifest"
md=$(sha256sum "$W/manifest" | cut -d' ' -f1); ms=$(stat -c %s "$W/manifest"); mv "$W/manifest" "$L/blobs/sha256/$md"
printf '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' "$md" "$ms" > "$L/index.json"
"$BERTH" copy --quiet "oci:$L:1" "docker://$SRC/bench/image:1" >/dev/null
rm -rf "$L"
echo "image: $LAYERS layers x $LAYER_MIB MiB, manifest sha256:$md, on $SRC"

SK=(skopeo --override-os linux --override-arch amd64)
now() { date +%s.%N; }
declare -A T
timed() { # key cmd...
    local t0 t1; sync; t0=$(now); "${@:2}" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }; t1=$(now)
    T[$1]+="$(echo "$t1 - $t0" | bc) "
}
for r in $(seq "$RUNS"); do
    order=(berth skopeo); [ $((r % 2)) = 0 ] && order=(skopeo berth)
    for tool in "${order[@]}"; do
        case $tool in
            berth)
                fresh_dst
                timed reg2reg_berth "$BERTH" copy --quiet "docker://$SRC/bench/image:1" "docker://$DST/berth$r/image:1"
                timed pull_berth "$BERTH" copy --quiet "docker://$SRC/bench/image:1" "oci:$W/oci-berth-$r:1"
                timed local_berth "$BERTH" --root "$W/local-$r" pull --quiet "$SRC/bench/image:1"
                ;;
            skopeo)
                fresh_dst
                timed reg2reg_skopeo "${SK[@]}" copy --src-tls-verify=false --dest-tls-verify=false "docker://$SRC/bench/image:1" "docker://$DST/skopeo$r/image:1"
                timed pull_skopeo "${SK[@]}" copy --src-tls-verify=false "docker://$SRC/bench/image:1" "oci:$W/oci-skopeo-$r:1"
                ;;
        esac
    done
    rm -rf "$W"/oci-* "$W"/local-*
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
row() { # label key_berth key_skopeo target-ratio
    local b s
    b=$(echo "${T[$2]}" | median)
    s=$(echo "${T[$3]}" | median)
    printf '| %s | %.2f | %.2f | %.2f | <=%s | %s |\n' "$1" "$b" "$s" "$(echo "$b / $s" | bc -l)" "$4" \
        "$(awk -v b="$b" -v s="$s" -v t="$4" 'BEGIN { print (b <= t * s) ? "PASS" : "MISS" }')"
}
echo
echo "| workload (n=$RUNS, seconds, median) | berth | skopeo | berth/skopeo | target | result |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
row "copy registry -> registry" reg2reg_berth reg2reg_skopeo 0.4
row "pull registry -> OCI layout" pull_berth pull_skopeo 0.5
row "berth pull -> local store (vs skopeo -> OCI layout)" local_berth pull_skopeo 0.4
