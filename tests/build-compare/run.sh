#!/usr/bin/env bash
# berth build vs BuildKit on a corpus of Dockerfiles.
#
#   tests/build-compare/run.sh              # every entry of corpus/
#   tests/build-compare/run.sh copy- env-   # entries whose name has these words
#
# For each corpus/<name>/ (a Dockerfile and its context) both builders build
# FROM the same busybox rootfs (docker import / berth import of the tarball
# compare.py mkbase writes): BuildKit in a private dockerd
# (DOCKER_BUILDKIT=1 /usr/bin/docker build), berth into a private root. The
# flattened filesystems (`docker export` vs `berth build -o type=tar`) and the
# image configs (`docker save` vs `berth save`) must match: compare.py says
# what is compared and what is ignored.
#
# Optional files in an entry:
#   args         extra build flags, one per line (--build-arg K=V, --target T,
#                --secret id=X,src=@ENTRY@/FILE: @ENTRY@ is the entry's directory)
#   pre/         a Dockerfile built first and tagged pre-<name>:1 in both
#                (e.g. an ONBUILD parent)
#   layers.json  hand-made layers on top of the base (compare.py mkimage),
#                loaded as pre-<name>:1 in both: layers no Dockerfile step
#                makes, like a file written through a lower layer's symlink
#   expect-fail  the build must fail in both; berth's error must match the
#                ERE this file holds (e.g. naming Dockerfile:LINE)
#   empty-dirs   directories (relative to the entry) to create before the
#                build: git keeps no empty directory
#   mount-stubs  RUN --mount targets (one per line) that Docker 20.10's BuildKit
#                leaves in the image as empty directories and berth (like newer
#                BuildKit) removes; not compared
#   pending      berth does not support this yet: the entry is skipped
#                (reason in the file and in corpus/PENDING.md) unless
#                BUILD_COMPARE_PENDING=1
#
# Builds run as root. BERTH_BIN=/path/to/berth skips building berth.
# Part of the client tier (tests/clients/10-build-compare.sh runs it).
. "$(dirname "$0")/../clients/lib.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite_begin build-compare

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null; then
    skip "build-compare suite" "docker.io is not installed (apt-get install docker.io)"
    suite_end
fi
require_root
command -v python3 >/dev/null || { skip "build-compare suite" "python3 is not installed"; suite_end; }
T=$TEST_TMP
PY="python3 $HERE/compare.py"
dk() { "$DOCKER" "$@"; }

if ! start_dockerd; then
    skip "build-compare (every entry)" "dockerd does not start here: ${DOCKERD_WHY:-see its log}"
    suite_end
fi
note "dockerd up with the $DOCKERD_DRIVER storage driver ($DOCKER_HOST)"
export DOCKER_BUILDKIT=1

# A private copy: RUN steps re-execute the binary as their sandbox helper,
# and others may rebuild it while the corpus runs.
cp "$BERTH_BIN" "$T/berth-bin" && BERTH_BIN="$T/berth-bin"
BR="$T/berth-root"
mkdir -p "$BR"
bb() { "$BERTH_BIN" --root "$BR" "$@"; }

# ------------------------------------------------------------ the shared base
quietly $PY mkbase "$T/base.tar" || suite_end
quietly dk import "$T/base.tar" busybox:latest || suite_end
quietly dk tag busybox:latest berth-test/base:1 || suite_end
quietly bb import "$T/base.tar" busybox:latest || suite_end
quietly bb import "$T/base.tar" berth-test/base:1 || suite_end

# read_args FILE: the flags of an entry's args file (one per line, # comments;
# @ENTRY@ is the entry's directory, e.g. for --secret id=x,src=@ENTRY@/file).
read_args() {
    ARGS=()
    [ -f "$1" ] || return 0
    local line entry
    entry=$(cd "$(dirname "$1")" && pwd)
    while IFS= read -r line || [ -n "$line" ]; do
        [[ -z $line || $line == \#* ]] && continue
        ARGS+=("${line//@ENTRY@/$entry}")
    done <"$1"
}

# docker_build CTX TAG LOG [FLAGS...]
docker_build() {
    local ctx=$1 tag=$2 log=$3
    shift 3
    dk build --progress plain --network none -t "$tag" "$@" "$ctx" >"$log" 2>&1
}

# berth_build CTX TAG LOG [FLAGS...]: into the store, and (FS_OUT set) a tar of the filesystem.
berth_build() {
    local ctx=$1 tag=$2 log=$3
    shift 3
    local out=()
    [ -n "${FS_OUT:-}" ] && out=(-o type=image -o "type=tar,dest=$FS_OUT")
    bb build --progress plain --network none -t "$tag" "${out[@]}" "$@" "$ctx" >"$log" 2>&1
}

run_entry() {
    local dir=$1 name
    name=$(basename "$dir")
    local w="$T/work/$name"
    mkdir -p "$w"
    if [ -f "$dir/pending" ] && [ -z "${BUILD_COMPARE_PENDING:-}" ]; then
        skip "$name" "pending: $(head -n1 "$dir/pending")"
        return
    fi
    if [ -f "$dir/empty-dirs" ]; then
        while IFS= read -r d; do [ -n "$d" ] && mkdir -p "$dir/$d"; done <"$dir/empty-dirs"
    fi
    read_args "$dir/args"
    if [ -f "$dir/layers.json" ]; then
        if ! $PY mkimage "$T/base.tar" "$dir/layers.json" "pre-$name:1" "$w/pre.tar" >"$w/pre.log" 2>&1 ||
            ! dk load -i "$w/pre.tar" >>"$w/pre.log" 2>&1 ||
            ! bb load -i "$w/pre.tar" >>"$w/pre.log" 2>&1; then
            fail "$name: loading layers.json as pre-$name:1" "" "$w/pre.log"
            return
        fi
    fi
    if [ -f "$dir/pre/Dockerfile" ]; then
        if ! docker_build "$dir/pre" "pre-$name:1" "$w/pre-docker.log"; then
            fail "$name: BuildKit builds pre/" "" "$w/pre-docker.log"
            return
        fi
        if ! FS_OUT='' berth_build "$dir/pre" "pre-$name:1" "$w/pre-berth.log"; then
            fail "$name: berth builds pre/" "" "$w/pre-berth.log"
            return
        fi
    fi
    local tag="cmp-$name:1"
    if [ -f "$dir/expect-fail" ]; then
        local want
        want=$(head -n1 "$dir/expect-fail")
        if docker_build "$dir" "$tag" "$w/docker.log" "${ARGS[@]}"; then
            fail "$name: BuildKit fails too (the entry is wrong)" "BuildKit built it" "$w/docker.log"
            return
        fi
        if FS_OUT='' berth_build "$dir" "$tag" "$w/berth.log" "${ARGS[@]}"; then
            fail "$name: berth fails like BuildKit" "berth built it" "$w/berth.log"
        elif grep -Eq -- "$want" "$w/berth.log"; then
            pass "$name: berth fails like BuildKit, naming /$want/"
        else
            fail "$name: berth fails like BuildKit" "its error does not match /$want/" "$w/berth.log"
        fi
        return
    fi
    if ! docker_build "$dir" "$tag" "$w/docker.log" "${ARGS[@]}"; then
        fail "$name: BuildKit builds it (the entry is wrong)" "" "$w/docker.log"
        return
    fi
    local cid
    if ! cid=$(dk create "$tag" /bin/true 2>"$w/create.err"); then
        fail "$name: docker create" "" "$w/create.err"
        return
    fi
    dk export -o "$w/docker-fs.tar" "$cid" && dk save -o "$w/docker-img.tar" "$tag"
    local rc=$?
    dk rm "$cid" >/dev/null 2>&1
    if [ $rc -ne 0 ]; then
        fail "$name: docker export/save" "exit $rc"
        return
    fi
    if ! FS_OUT="$w/berth-fs.tar" berth_build "$dir" "$tag" "$w/berth.log" "${ARGS[@]}"; then
        fail "$name: berth builds it" "" "$w/berth.log"
        return
    fi
    if ! bb save -q -o "$w/berth-img.tar" "$tag" >"$w/save.log" 2>&1; then
        fail "$name: berth save" "" "$w/save.log"
        return
    fi
    if BUILD_COMPARE_MOUNT_STUBS="$dir/mount-stubs" $PY compare "$w/docker-fs.tar" "$w/docker-img.tar" "$w/berth-fs.tar" "$w/berth-img.tar" >"$w/diff" 2>&1; then
        pass "$name: filesystem and config match BuildKit's"
    else
        fail "$name: filesystem and config match BuildKit's" "$(wc -l <"$w/diff") differences" "$w/diff"
    fi
}

entries=()
for d in "$HERE"/corpus/*/; do
    d=${d%/}
    [ -f "$d/Dockerfile" ] || continue
    if [ $# -gt 0 ]; then
        m=0
        for word in "$@"; do [[ $(basename "$d") == *"$word"* ]] && m=1; done
        [ $m = 1 ] || continue
    fi
    entries+=("$d")
done
note "${#entries[@]} corpus entries"
for d in "${entries[@]}"; do
    run_entry "$d"
done
if [ -n "${BUILD_COMPARE_KEEP:-}" ]; then
    # Keep the work directory (logs, tars, diffs) for a look by hand.
    cp -a "$T/work" "$BUILD_COMPARE_KEEP" 2>/dev/null && note "work kept in $BUILD_COMPARE_KEEP"
fi
suite_end
