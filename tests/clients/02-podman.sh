#!/usr/bin/env bash
# podman against berth: push (OCI and Docker schema 2), pull by tag and by
# digest, run the pulled image, search (_catalog), login, and a manifest list
# built with `podman manifest` and pushed with --all.
. "$(dirname "$0")/lib.sh"
suite_begin podman

command -v podman >/dev/null || { skip "podman suite" "podman is not installed (apt-get install podman)"; suite_end; }
require_root
start_berth
T=$TEST_TMP
# Private storage (vfs: no mounts to leave behind), no systemd; runc unless
# the caller names a runtime first.
pm() {
    local rt=(--runtime runc)
    [ "${1:-}" = --runtime ] && { rt=(--runtime "$2"); shift 2; }
    podman --root "$T/storage" --runroot "$T/runroot" --storage-driver vfs --tmpdir "$T/libpod-tmp" \
        --cgroup-manager cgroupfs --events-backend file "${rt[@]}" "$@"
}
defer "pm rm -a -f; pm rmi -a -f"
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
IMG=$REG/podman/busybox

quietly make_busybox_tar "$T/bb.tar" || exit 1
check "podman import of a busybox rootfs" pm import --change 'CMD ["/bin/sh"]' "$T/bb.tar" localhost/busybox:import
check "podman tag" pm tag localhost/busybox:import "$IMG:1"

# ------------------------------------------------------------ push
check "podman push --tls-verify=false (default format)" pm push --tls-verify=false --digestfile "$T/d.1" "$IMG:1"
D1=$(cat "$T/d.1" 2>/dev/null)
curl -s -D "$T/hdrs" -o "$T/m.1" -H "Accept: $OCI_MANIFEST, $DOCKER_V2" "$URL/v2/podman/busybox/manifests/1"
CT=$(tr -d '\r' <"$T/hdrs" | awk -F': ' 'tolower($1) == "content-type" { print $2 }')
assert_eq "pushed manifest served with the Content-Type podman sent ($OCI_MANIFEST)" "$OCI_MANIFEST" "$CT"
assert_eq "served manifest hashes to podman's digest" "$D1" "$(sha256_of "$T/m.1")"
LAYER=$(jq -r '.layers[0].digest' "$T/m.1")
assert_eq "layer blob hashes to its digest" "$LAYER" "$(curl -s "$URL/v2/podman/busybox/blobs/$LAYER" | sha256sum | sed 's/^/sha256:/; s/ .*//')"
check "podman push --format v2s2" pm push --tls-verify=false --format v2s2 --digestfile "$T/d.v2s2" "$IMG:1" "docker://$IMG:v2s2"
assert_eq "v2s2 push is Docker schema 2" "$DOCKER_V2" \
    "$(curl -s -H "Accept: $DOCKER_V2" "$URL/v2/podman/busybox/manifests/v2s2" | jq -r .mediaType)"
assert_eq "v2s2 push: Docker-Content-Digest matches podman's digest" "$(cat "$T/d.v2s2" 2>/dev/null)" "$(manifest_digest podman/busybox v2s2)"

# zstd layers: an image of its own (same content would be reused from the
# gzip push above, podman's blob cache knows it).
mkdir -p "$T/z"
tar -C "$T/z" -xf "$T/bb.tar" && echo zstd >"$T/z/etc/berth-test" && tar_dir "$T/z" "$T/z.tar"
check "podman import of an image for the zstd push" pm import --change 'CMD ["/bin/sh"]' "$T/z.tar" localhost/busybox:zstd
check "podman push --compression-format zstd" \
    pm push --tls-verify=false --compression-format zstd --digestfile "$T/d.zstd" localhost/busybox:zstd "docker://$REG/podman/zstd:1"
curl -s -o "$T/m.zstd" -H "Accept: $OCI_MANIFEST" "$URL/v2/podman/zstd/manifests/1"
assert_eq "zstd push: served bytes hash to podman's digest" "$(cat "$T/d.zstd" 2>/dev/null)" "$(sha256_of "$T/m.zstd")"
assert_eq "zstd push: layer media type" "application/vnd.oci.image.layer.v1.tar+zstd" "$(jq -r '.layers[0].mediaType' "$T/m.zstd")"
ZL=$(jq -r '.layers[0].digest' "$T/m.zstd")
assert_eq "zstd push: the layer is a zstd frame (Range: bytes=0-3)" "28b52ffd" \
    "$(curl -s -r 0-3 "$URL/v2/podman/zstd/blobs/$ZL" | od -An -tx1 | tr -d ' \n')"
check "podman rmi of the zstd image" pm rmi -f localhost/busybox:zstd

# ------------------------------------------------------------ pull
check "podman rmi (local copies gone)" pm rmi -f "$IMG:1" localhost/busybox:import
if pm image exists "$IMG:1"; then fail "image removed before the pull" "$IMG:1 still exists"; fi
check "podman pull --tls-verify=false" pm pull --tls-verify=false "$IMG:1"
if check_out INSPECT "podman image inspect of the pulled image" pm image inspect "$IMG:1"; then
    assert_eq "pulled image: Digest is the pushed digest" "$D1" "$(jq -r '.[0].Digest' <<<"$INSPECT")"
    assert_contains "pulled image: RepoDigests" "$IMG@$D1" "$(jq -r '.[0].RepoDigests[]' <<<"$INSPECT")"
    assert_eq "pulled image: architecture and Cmd" "amd64 /bin/sh" \
        "$(jq -r '.[0] | .Architecture + " " + (.Config.Cmd | join(" "))' <<<"$INSPECT")"
fi
if check_out MNT "podman image mount of the pulled image" pm image mount "$IMG:1"; then
    assert_files_equal "pulled rootfs holds the busybox that was pushed" /bin/busybox "$MNT/bin/busybox"
    pm image unmount "$IMG:1" >/dev/null 2>&1
fi
check "podman pull by digest" pm pull --tls-verify=false "$IMG@$D1"
check "podman pull of the v2s2 tag" pm pull --tls-verify=false "$IMG:v2s2"
check "podman pull of the zstd image" pm pull --tls-verify=false "$REG/podman/zstd:1"
if MNT=$(pm image mount "$REG/podman/zstd:1" 2>"$T/mnt.err"); then
    assert_files_equal "zstd image unpacked: busybox intact" /bin/busybox "$MNT/bin/busybox"
    assert_eq "zstd image unpacked: its own file" zstd "$(cat "$MNT/etc/berth-test" 2>&1)"
    pm image unmount "$REG/podman/zstd:1" >/dev/null 2>&1
else
    fail "podman image mount of the zstd image" "$(tail -n 1 "$T/mnt.err")"
fi

# ------------------------------------------------------------ run
# First as the brief writes it (default runtime and limits). Where that fails
# (in the dev sandbox crun refuses the cgroup v1/v2 hybrid mode, and the
# default nofile/nproc rlimits are above what a container may set without
# CAP_SYS_RESOURCE in the bounding set), runc with explicit limits.
RUN=(run --rm --network none "$IMG:1")
if pm --runtime "${PODMAN_RUNTIME:-crun}" run --rm "$IMG:1" /bin/busybox echo hi >"$T/run.out" 2>"$T/run.err"; then
    assert_eq "podman run --rm IMAGE /bin/busybox echo hi" "hi" "$(cat "$T/run.out")"
else
    note "podman run with the default runtime and limits failed: $(tail -n 1 "$T/run.err"); retrying with runc and explicit ulimits"
    RUN=(run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$IMG:1")
fi
if pm "${RUN[@]}" /bin/busybox echo hi >"$T/run.out" 2>"$T/run.err"; then
    assert_eq "podman ${RUN[*]} /bin/busybox echo hi" "hi" "$(cat "$T/run.out")"
    assert_eq "podman run: file from the image" "berth client test image" "$(pm "${RUN[@]}" /bin/cat /etc/berth-test 2>&1)"
else
    skip "podman run of the pulled image" "containers cannot run here: $(tail -n 1 "$T/run.err") (image checked with image inspect and image mount above)"
fi

# ------------------------------------------------------------ search, login
if check_out FOUND "podman search (the _catalog)" pm search --tls-verify=false --format '{{.Name}}' "$REG/busybox"; then
    assert_eq "podman search finds the repository" "$IMG" "$FOUND"
fi
check "podman login (registry without auth)" pm login --tls-verify=false -u anyone -p anything "$REG"

# ------------------------------------------------------------ manifest list
mkdir -p "$T/arm"
tar -C "$T/arm" -xf "$T/bb.tar" && echo arm64 >"$T/arm/etc/berth-test" && tar_dir "$T/arm" "$T/arm.tar"
check "podman import of a second image" pm import --change 'CMD ["/bin/sh"]' "$T/arm.tar" localhost/busybox:arm
check "podman manifest create" pm manifest create localhost/busybox-list
check "podman manifest add (from berth)" pm manifest add --tls-verify=false localhost/busybox-list "docker://$IMG:1"
check "podman manifest add --arch arm64 (local image)" \
    pm manifest add --arch arm64 --variant v8 localhost/busybox-list containers-storage:localhost/busybox:arm
check "podman manifest push --all" \
    pm manifest push --all --tls-verify=false --digestfile "$T/d.list" localhost/busybox-list "docker://$REG/podman/list:1"
curl -s -o "$T/list" -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json' \
    "$URL/v2/podman/list/manifests/1"
assert_eq "pushed list hashes to podman's digest" "$(cat "$T/d.list" 2>/dev/null)" "$(sha256_of "$T/list")"
assert_eq "pushed list platforms" "linux/amd64 linux/arm64/v8" \
    "$(jq -r '[.manifests[].platform | [.os, .architecture, .variant // empty] | join("/")] | join(" ")' "$T/list")"
for child in $(jq -r '.manifests[].digest' "$T/list"); do
    assert_eq "list child $child is in the repository" 200 "$(http_code HEAD "$URL/v2/podman/list/manifests/$child" \
        -H "Accept: $OCI_MANIFEST, $DOCKER_V2")"
done
check "podman pull --arch arm64 from the list" pm pull --tls-verify=false --arch arm64 "$REG/podman/list:1"
if MNT=$(pm image mount "$REG/podman/list:1" 2>"$T/mnt.err"); then
    assert_eq "the arm64 entry of the list was pulled" arm64 "$(cat "$MNT/etc/berth-test" 2>&1)"
    pm image unmount "$REG/podman/list:1" >/dev/null 2>&1
else
    fail "podman image mount of the list pull" "$(tail -n 1 "$T/mnt.err")"
fi

check_berth_log
suite_end
