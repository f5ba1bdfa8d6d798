# shellcheck shell=bash
# Shared helpers for the real-client interoperability tier (tests/clients/*.sh).
#
# A suite script does:
#   . "$(dirname "$0")/lib.sh"
#   suite_begin skopeo          # temp dir, cleanup trap, counters
#   start_berth                 # berth on a free loopback port: $REG=127.0.0.1:PORT
#   check "what" cmd args...    # PASS if cmd exits 0, FAIL (with its output) if not
#   assert_eq "what" expected actual
#   skip "what" "why"
#   suite_end                   # prints the suite's tally, exits 1 on any failure
#
# Every line a check prints starts with PASS, FAIL or SKIP. run.sh adds up the
# tallies each suite writes to $CLIENTS_RESULTS (when set).
#
# Nothing here reaches beyond 127.0.0.1: images are made from /bin/busybox.

set -u -o pipefail

CLIENTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLIENTS_DIR/../.." && pwd)
DOCKER=/usr/bin/docker # /usr/local/bin/docker is another client: use the engine's own

SUITE=${SUITE:-clients}
PASSED=0
FAILED=0
SKIPPED=0
CHECK_SEQ=0
TEST_TMP=
_CLEANUPS=()
_ENDED=0

# ---------------------------------------------------------------- reporting

_line() { printf '%-4s [%s] %s\n' "$1" "$SUITE" "$2"; }

pass() {
    PASSED=$((PASSED + 1))
    _line PASS "$1"
}

# fail WHAT [WHY] [LOGFILE]: the log's tail is shown indented under the line.
fail() {
    FAILED=$((FAILED + 1))
    _line FAIL "$1${2:+ -- $2}"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then
        tail -n 25 "$3" | sed 's/^/        | /'
    fi
}

skip() {
    SKIPPED=$((SKIPPED + 1))
    _line SKIP "$1 -- $2"
}

# note TEXT: an informational line (not a check).
note() { printf '     [%s] note: %s\n' "$SUITE" "$*"; }

# check WHAT CMD [ARGS...]: runs CMD with its output in a log; returns its status.
check() {
    local what=$1
    shift
    CHECK_SEQ=$((CHECK_SEQ + 1))
    LAST_LOG="$TEST_TMP/logs/$CHECK_SEQ.log"
    local rc=0
    "$@" >"$LAST_LOG" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        pass "$what"
        return 0
    fi
    fail "$what" "exit $rc: $*" "$LAST_LOG"
    return "$rc"
}

# check_out VAR WHAT CMD...: like check, and stores the command's stdout in VAR.
check_out() {
    local __var=$1 what=$2
    shift 2
    CHECK_SEQ=$((CHECK_SEQ + 1))
    LAST_LOG="$TEST_TMP/logs/$CHECK_SEQ.log"
    local out="$TEST_TMP/logs/$CHECK_SEQ.out" rc=0
    "$@" >"$out" 2>"$LAST_LOG" || rc=$?
    printf -v "$__var" '%s' "$(cat "$out")"
    if [ "$rc" -eq 0 ]; then
        pass "$what"
        return 0
    fi
    cat "$out" >>"$LAST_LOG"
    fail "$what" "exit $rc: $*" "$LAST_LOG"
    return "$rc"
}

# quietly CMD...: runs a setup step; on failure it counts as a failed check.
quietly() {
    CHECK_SEQ=$((CHECK_SEQ + 1))
    LAST_LOG="$TEST_TMP/logs/$CHECK_SEQ.log"
    local rc=0
    "$@" >"$LAST_LOG" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && return 0
    fail "setup step failed" "exit $rc: $*" "$LAST_LOG"
    return "$rc"
}

assert_eq() {
    local what=$1 want=$2 got=$3
    if [ "$want" == "$got" ]; then
        pass "$what"
    else
        fail "$what" "expected [$(printf '%s' "$want" | head -c 600 | tr '\n' '|')] got [$(printf '%s' "$got" | head -c 600 | tr '\n' '|')]"
        return 1
    fi
}

assert_ne() {
    local what=$1 unwanted=$2 got=$3
    if [ "$unwanted" != "$got" ]; then
        pass "$what"
    else
        fail "$what" "got the value it must differ from: [$got]"
        return 1
    fi
}

# assert_match WHAT ERE VALUE
assert_match() {
    local what=$1 re=$2 got=$3
    if [[ $got =~ $re ]]; then
        pass "$what"
    else
        fail "$what" "[$(printf '%s' "$got" | head -c 600 | tr '\n' '|')] does not match /$re/"
        return 1
    fi
}

# assert_contains WHAT NEEDLE HAYSTACK
assert_contains() {
    local what=$1 needle=$2 hay=$3
    if [[ $hay == *"$needle"* ]]; then
        pass "$what"
    else
        fail "$what" "[$needle] not found in [$(printf '%s' "$hay" | head -c 600 | tr '\n' '|')]"
        return 1
    fi
}

# assert_files_equal WHAT FILE1 FILE2: byte-identical.
assert_files_equal() {
    if cmp -s "$2" "$3"; then
        pass "$1"
    else
        fail "$1" "$2 and $3 differ ($(wc -c <"$2" 2>/dev/null || echo ?) vs $(wc -c <"$3" 2>/dev/null || echo ?) bytes)"
        return 1
    fi
}

# ---------------------------------------------------------------- lifecycle

# defer CMD: run at exit, last registered first.
defer() { _CLEANUPS+=("$*"); }

_cleanup() {
    local i
    for ((i = ${#_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${_CLEANUPS[$i]}" >/dev/null 2>&1 || true
    done
    _CLEANUPS=()
    if [ -n "$TEST_TMP" ] && [ -d "$TEST_TMP" ]; then
        # Daemons (dockerd, podman) may leave mounts under the temp dir.
        local m
        while read -r m; do
            umount -l "$m" >/dev/null 2>&1 || true
        done < <(awk -v p="$TEST_TMP/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
        rm -rf "$TEST_TMP" 2>/dev/null || {
            chattr -R -i "$TEST_TMP" >/dev/null 2>&1
            rm -rf "$TEST_TMP" 2>/dev/null
        } || true
    fi
}

_on_exit() {
    local rc=$?
    if [ "$_ENDED" -eq 0 ]; then
        # The script died before suite_end: that is a failure of its own.
        FAILED=$((FAILED + 1))
        _line FAIL "suite aborted (exit $rc) before it finished"
        _write_tally
    fi
    _cleanup
}

_write_tally() {
    if [ -n "${CLIENTS_RESULTS:-}" ]; then
        printf '%s %s %s %s\n' "$SUITE" "$PASSED" "$FAILED" "$SKIPPED" >>"$CLIENTS_RESULTS"
    fi
}

suite_begin() {
    SUITE=$1
    TEST_TMP=$(mktemp -d "/tmp/berth-clients-$SUITE.XXXXXX")
    mkdir -p "$TEST_TMP/logs" "$TEST_TMP/home"
    trap _on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Keep every client's config and state inside the temp dir.
    export HOME="$TEST_TMP/home"
    export XDG_CONFIG_HOME="$TEST_TMP/home/.config"
    export XDG_RUNTIME_DIR="$TEST_TMP/run"
    export DOCKER_CONFIG="$TEST_TMP/home/.docker"
    export REGISTRY_AUTH_FILE="$TEST_TMP/home/auth.json"
    echo "{}" >"$REGISTRY_AUTH_FILE"
    export TMPDIR="$TEST_TMP/tmp" # containers/image puts big temporary files there
    mkdir -p "$XDG_RUNTIME_DIR" "$DOCKER_CONFIG" "$TMPDIR"
    chmod 700 "$XDG_RUNTIME_DIR"
    # No proxy could be reached anyway; make sure loopback never goes to one.
    export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
    # containers/image tools (skopeo, podman, buildah): no search registries,
    # so nothing can ever be resolved against a registry on the internet.
    export CONTAINERS_REGISTRIES_CONF="$TEST_TMP/registries.conf"
    printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' >"$CONTAINERS_REGISTRIES_CONF"
    export SIGNATURE_POLICY="$TEST_TMP/policy.json"
    printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$SIGNATURE_POLICY"
    # No curl in these tests may hang: every transfer is short and local.
    printf -- '--max-time 120\n--connect-timeout 10\n' >"$HOME/.curlrc"
    _SUITE_START=$SECONDS
    berth_bin
}

suite_end() {
    _ENDED=1
    printf '     [%s] %d passed, %d failed, %d skipped in %ds\n' \
        "$SUITE" "$PASSED" "$FAILED" "$SKIPPED" $((SECONDS - _SUITE_START))
    _write_tally
    [ "$FAILED" -eq 0 ]
    exit $?
}

# require_root: daemons and container storage here need root; otherwise the
# whole suite is skipped, saying why.
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        skip "$SUITE suite" "needs root (private container storage, dockerd); run as root"
        suite_end
    fi
}

# ---------------------------------------------------------------- berth

# berth_bin: sets BERTH_BIN. run.sh builds once and exports a private copy
# (others may be rebuilding target/ meanwhile); run alone, a suite uses
# target/release/berth, building it if it is missing.
berth_bin() {
    if [ -n "${BERTH_BIN:-}" ] && [ -x "$BERTH_BIN" ]; then
        return 0
    fi
    local bin="$REPO_ROOT/target/release/berth"
    if [ ! -x "$bin" ]; then
        (cd "$REPO_ROOT" && cargo build --release -q -p berth) >&2 || {
            _line FAIL "cargo build --release -p berth failed"
            exit 1
        }
    fi
    cp "$bin" "$TEST_TMP/berth"
    BERTH_BIN="$TEST_TMP/berth"
}

# start_berth [SERVE FLAGS...]: a berth registry on a free loopback port with
# an empty temp root. Sets BERTH_PID, BERTH_PORT, BERTH_ROOT_DIR, BERTH_LOG,
# REG (127.0.0.1:PORT) and URL (http://127.0.0.1:PORT). Stopped at exit.
start_berth() {
    start_berth_on "$(mktemp -d "$TEST_TMP/berth-root.XXXXXX")" "$@"
}

# start_berth_on ROOT [SERVE FLAGS...]: the same on an existing root (e.g. to
# restart a stopped server on what it stored).
start_berth_on() {
    BERTH_ROOT_DIR=$1
    shift
    BERTH_LOG=$(mktemp "$TEST_TMP/berth.XXXXXX.log")
    # Port 0: the kernel picks a free port, the log says which.
    "$BERTH_BIN" serve --addr 127.0.0.1:0 --root "$BERTH_ROOT_DIR" "$@" >"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    defer stop_berth
    local i addr=
    for ((i = 0; i < 100; i++)); do
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$BERTH_LOG" | sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' | head -n1)
        [ -n "$addr" ] && break
        kill -0 "$BERTH_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        fail "berth serve started" "no listening address in its log" "$BERTH_LOG"
        exit 1
    fi
    BERTH_PORT=${addr##*:}
    REG="127.0.0.1:$BERTH_PORT"
    URL="http://$REG"
    for ((i = 0; i < 50; i++)); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/")" = 200 ]; then
            note "berth serving on $REG, root $BERTH_ROOT_DIR"
            return 0
        fi
        sleep 0.1
    done
    fail "berth serve answers GET /v2/" "" "$BERTH_LOG"
    exit 1
}

stop_berth() {
    [ -n "${BERTH_PID:-}" ] || return 0
    kill -TERM "$BERTH_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$BERTH_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$BERTH_PID" 2>/dev/null || true
    wait "$BERTH_PID" 2>/dev/null || true
    BERTH_PID=
}

# check_berth_log: berth logged no panic and no internal error.
check_berth_log() {
    local bad
    bad=$(sed 's/\x1b\[[0-9;]*m//g' "$BERTH_LOG" | grep -E 'panicked|internal error| ERROR ' | head -n 5)
    if [ -z "$bad" ]; then
        pass "berth logged no panic or internal error"
    else
        fail "berth logged no panic or internal error" "$bad"
    fi
}

# ---------------------------------------------------------------- HTTP

# http_code METHOD URL [CURL ARGS...]: prints the status code.
http_code() {
    local m=$1 u=$2
    shift 2
    if [ "$m" = HEAD ]; then
        curl -s -I -o /dev/null -w '%{http_code}' "$@" "$u"
    else
        curl -s -o /dev/null -w '%{http_code}' -X "$m" "$@" "$u"
    fi
}

# manifest_digest REPO REF: Docker-Content-Digest of a HEAD.
manifest_digest() {
    curl -sI "$URL/v2/$1/manifests/$2" \
        -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json' |
        tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# ---------------------------------------------------------------- images

# make_busybox_rootfs DIR: a minimal rootfs, /bin/busybox (static) plus
# applet symlinks and a marker file.
make_busybox_rootfs() {
    local dir=$1 a
    local bb
    bb=$(command -v busybox || true)
    [ -x /bin/busybox ] && bb=/bin/busybox
    if [ -z "$bb" ] || ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
        # busybox-static's binary is the only one that runs without a libc.
        [ -x /bin/busybox ] || { echo "no /bin/busybox (apt-get install busybox-static)" >&2; return 1; }
        bb=/bin/busybox
    fi
    mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
    cp "$bb" "$dir/bin/busybox"
    chmod 755 "$dir/bin/busybox"
    for a in sh ls cat echo true false env id uname mkdir rm cp mv sleep printf test; do
        ln -sf busybox "$dir/bin/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
    echo 'root:x:0:' >"$dir/etc/group"
    echo 'berth client test image' >"$dir/etc/berth-test"
}

# tar_dir DIR OUT: a reproducible tar of DIR's contents.
tar_dir() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

# make_busybox_tar OUT: make_busybox_rootfs packed as a tar (for *import).
make_busybox_tar() {
    local d
    d=$(mktemp -d "$TEST_TMP/rootfs.XXXXXX")
    make_busybox_rootfs "$d" && tar_dir "$d" "$1"
}

# _oci_blob LAYOUT FILE: moves FILE into LAYOUT's blobs; prints its digest.
_oci_blob() {
    local hex
    hex=$(sha256sum "$2" | cut -d' ' -f1)
    mkdir -p "$1/blobs/sha256"
    mv "$2" "$1/blobs/sha256/$hex"
    echo "sha256:$hex"
}

_oci_layout_init() {
    mkdir -p "$1/blobs/sha256"
    [ -f "$1/oci-layout" ] || echo '{"imageLayoutVersion":"1.0.0"}' >"$1/oci-layout"
    [ -f "$1/index.json" ] || echo '{"schemaVersion":2,"manifests":[]}' >"$1/index.json"
}

# _oci_tag LAYOUT TAG MEDIATYPE DIGEST SIZE [PLATFORM JSON]: (re)names a
# manifest in index.json.
_oci_tag() {
    local layout=$1 tag=$2 mt=$3 dg=$4 size=$5 plat=${6:-null}
    jq -c --arg t "$tag" --arg mt "$mt" --arg d "$dg" --argjson s "$size" --argjson p "$plat" '
        .manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] != $t))
        | .manifests += [{mediaType: $mt, digest: $d, size: $s,
                          annotations: {"org.opencontainers.image.ref.name": $t}}
                         + (if $p == null then {} else {platform: $p} end)]' \
        "$layout/index.json" >"$layout/index.json.new" && mv "$layout/index.json.new" "$layout/index.json"
}

# make_oci_image LAYOUT TAG [ARCH] [MARKER]: an OCI image of two gzip layers
# (the busybox rootfs, then /etc/berth-image holding MARKER, plus
# /data/$(basename $OCI_EXTRA_FILE) when that is set) whose config says ARCH
# (default amd64), written into the OCI layout LAYOUT under TAG.
# Prints the manifest digest. Built by hand: deterministic bytes.
make_oci_image() {
    local layout=$1 tag=$2 arch=${3:-amd64} marker=${4:-$2}
    _oci_layout_init "$layout"
    local work
    work=$(mktemp -d "$TEST_TMP/img.XXXXXX")
    # Layer 1: the rootfs (shared between images made here: same bytes).
    make_busybox_rootfs "$work/rootfs" || return 1
    tar_dir "$work/rootfs" "$work/l1.tar"
    # Layer 2: a marker, different per image.
    mkdir -p "$work/l2/etc"
    printf '%s %s\n' "$marker" "$arch" >"$work/l2/etc/berth-image"
    if [ -n "${OCI_EXTRA_FILE:-}" ]; then
        mkdir -p "$work/l2/data" && cp "$OCI_EXTRA_FILE" "$work/l2/data/"
    fi
    tar_dir "$work/l2" "$work/l2.tar"
    local diff1 diff2 l1 l2 s1 s2
    diff1=$(sha256_of "$work/l1.tar")
    diff2=$(sha256_of "$work/l2.tar")
    gzip -n -6 -c "$work/l1.tar" >"$work/l1.tgz"
    gzip -n -1 -c "$work/l2.tar" >"$work/l2.tgz"
    s1=$(stat -c %s "$work/l1.tgz")
    s2=$(stat -c %s "$work/l2.tgz")
    l1=$(_oci_blob "$layout" "$work/l1.tgz")
    l2=$(_oci_blob "$layout" "$work/l2.tgz")
    local variant=
    [ "$arch" = arm ] && variant=v7
    [ "$arch" = arm64 ] && variant=v8
    jq -cn --arg a "$arch" --arg v "$variant" --arg d1 "$diff1" --arg d2 "$diff2" --arg m "$marker" '
        {created: "1970-01-01T00:00:00Z", architecture: $a, os: "linux",
         config: {Env: ["PATH=/bin"], Cmd: ["/bin/sh"], Labels: {"berth.test.marker": $m}},
         rootfs: {type: "layers", diff_ids: [$d1, $d2]},
         history: [{created: "1970-01-01T00:00:00Z", created_by: "busybox rootfs"},
                   {created: "1970-01-01T00:00:00Z", created_by: "marker"}]}
        + (if $v == "" then {} else {variant: $v} end)' | tr -d '\n' >"$work/config.json"
    local cfg cs
    cs=$(stat -c %s "$work/config.json")
    cfg=$(_oci_blob "$layout" "$work/config.json")
    jq -cn --arg c "$cfg" --argjson cs "$cs" --arg l1 "$l1" --argjson s1 "$s1" --arg l2 "$l2" --argjson s2 "$s2" '
        {schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
         config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
         layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l1, size: $s1},
                  {mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l2, size: $s2}]}' \
        | tr -d '\n' >"$work/manifest.json"
    local ms md plat
    ms=$(stat -c %s "$work/manifest.json")
    md=$(_oci_blob "$layout" "$work/manifest.json")
    plat=$(jq -cn --arg a "$arch" --arg v "$variant" '{architecture: $a, os: "linux"} + (if $v == "" then {} else {variant: $v} end)')
    _oci_tag "$layout" "$tag" application/vnd.oci.image.manifest.v1+json "$md" "$ms" "$plat"
    rm -rf "$work"
    echo "$md"
}

# make_oci_index LAYOUT TAG CHILD_TAG...: an OCI image index of the named
# images of LAYOUT (with their platforms), tagged TAG. Prints its digest.
make_oci_index() {
    local layout=$1 tag=$2
    shift 2
    local children='[]' t
    for t in "$@"; do
        children=$(jq -c --arg t "$t" --argjson acc "$children" '
            $acc + [.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)
                    | del(.annotations)]' "$layout/index.json")
    done
    local f="$TEST_TMP/index.$$.json"
    jq -cn --argjson m "$children" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}' |
        tr -d '\n' >"$f"
    local s d
    s=$(stat -c %s "$f")
    d=$(_oci_blob "$layout" "$f")
    _oci_tag "$layout" "$tag" application/vnd.oci.image.index.v1+json "$d" "$s"
    echo "$d"
}

# oci_ref_digest LAYOUT TAG: the digest index.json gives TAG.
oci_ref_digest() {
    jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$1/index.json"
}

# oci_blob_path LAYOUT DIGEST
oci_blob_path() { echo "$1/blobs/${2%%:*}/${2#*:}"; }

# ---------------------------------------------------------------- dockerd

# start_dockerd: a private Docker engine (temp data-root, exec-root, pidfile
# and socket), no bridge and no iptables, so it changes nothing on the host.
# Tries overlay2, then vfs (or $DOCKERD_STORAGE_DRIVERS). Sets DOCKER_HOST,
# DOCKERD_DRIVER, DOCKERD_DIR and DOCKERD_LOG; returns 1 if
# no driver works (the caller reports why from $DOCKERD_LOG).
start_dockerd() {
    local driver d
    command -v dockerd >/dev/null || { DOCKERD_WHY="dockerd is not installed"; return 1; }
    for driver in ${DOCKERD_STORAGE_DRIVERS:-overlay2 vfs}; do
        d=$(mktemp -d "$TEST_TMP/dockerd-$driver.XXXXXX")
        DOCKERD_DIR=$d
        DOCKERD_LOG="$d/dockerd.log"
        dockerd --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
            -H "unix://$d/docker.sock" --storage-driver "$driver" \
            --bridge none --iptables=false --ip6tables=false --ip-masq=false \
            --insecure-registry "127.0.0.0/8" >"$DOCKERD_LOG" 2>&1 &
        DOCKERD_PID=$!
        defer stop_dockerd "$DOCKERD_PID"
        export DOCKER_HOST="unix://$d/docker.sock"
        local i
        for ((i = 0; i < 150; i++)); do
            if "$DOCKER" version >/dev/null 2>&1; then
                DOCKERD_DRIVER=$driver
                if [ "$("$DOCKER" info --format '{{.Driver}}' 2>/dev/null)" = "$driver" ]; then
                    return 0
                fi
                break
            fi
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.2
        done
        DOCKERD_WHY="dockerd with $driver: $(grep -E 'level=(error|fatal)' "$DOCKERD_LOG" | tail -n 1)"
        note "$DOCKERD_WHY"
        stop_dockerd "$DOCKERD_PID"
    done
    unset DOCKER_HOST
    return 1
}

stop_dockerd() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
