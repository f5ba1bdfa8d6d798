#!/usr/bin/env bash
# buildah against berth: an image built from scratch (buildah copy of a
# busybox rootfs), committed in OCI and Docker formats and pushed; then pulled
# back as the base of a second image whose push reuses the base layer.
. "$(dirname "$0")/lib.sh"
suite_begin buildah

command -v buildah >/dev/null || { skip "buildah suite" "buildah is not installed (apt-get install buildah)"; suite_end; }
require_root
start_berth
T=$TEST_TMP
bd() { buildah --root "$T/storage" --runroot "$T/runroot" --storage-driver vfs "$@"; }
defer "bd rm -a; bd rmi -a -f"
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
ACCEPT="Accept: $OCI_MANIFEST, $DOCKER_V2"
IMG=$REG/buildah/busybox

quietly make_busybox_rootfs "$T/rootfs" || exit 1

# ------------------------------------------------------------ from scratch
check_out CTR "buildah from scratch" bd from scratch
check "buildah copy of the busybox rootfs" bd copy "$CTR" "$T/rootfs" /
check "buildah config" bd config --cmd /bin/sh --env PATH=/bin --arch amd64 --os linux --label berth.test=buildah "$CTR"
check "buildah commit (OCI format)" bd commit --format oci "$CTR" localhost/busybox:oci
check "buildah commit (Docker format)" bd commit --format docker "$CTR" localhost/busybox:docker

check "buildah push (OCI) --tls-verify=false" \
    bd push --tls-verify=false --digestfile "$T/d.oci" localhost/busybox:oci "docker://$IMG:oci"
D_OCI=$(cat "$T/d.oci" 2>/dev/null)
curl -s -D "$T/hdrs" -o "$T/m.oci" -H "$ACCEPT" "$URL/v2/buildah/busybox/manifests/oci"
assert_eq "OCI push served as an OCI manifest" "$OCI_MANIFEST" \
    "$(tr -d '\r' <"$T/hdrs" | awk -F': ' 'tolower($1) == "content-type" { print $2 }')"
assert_eq "OCI push: served bytes hash to buildah's digest" "$D_OCI" "$(sha256_of "$T/m.oci")"
CFG=$(jq -r .config.digest "$T/m.oci")
curl -s -o "$T/cfg.oci" "$URL/v2/buildah/busybox/blobs/$CFG"
assert_eq "OCI push: config blob hashes to its digest" "$CFG" "$(sha256_of "$T/cfg.oci")"
assert_eq "OCI push: config carries the label and Cmd" "buildah /bin/sh" \
    "$(jq -r '.config.Labels["berth.test"] + " " + (.config.Cmd | join(" "))' "$T/cfg.oci")"
BASE_LAYER=$(jq -r '.layers[0].digest' "$T/m.oci")
assert_eq "OCI push: one layer" 1 "$(jq '.layers | length' "$T/m.oci")"

check "buildah push (Docker format) --tls-verify=false" \
    bd push --tls-verify=false --digestfile "$T/d.docker" localhost/busybox:docker "docker://$IMG:docker"
curl -s -o "$T/m.docker" -H "$ACCEPT" "$URL/v2/buildah/busybox/manifests/docker"
assert_eq "Docker push is schema 2 with a Docker config" "$DOCKER_V2 application/vnd.docker.container.image.v1+json" \
    "$(jq -r '.mediaType + " " + .config.mediaType' "$T/m.docker")"
assert_eq "Docker push: served bytes hash to buildah's digest" "$(cat "$T/d.docker" 2>/dev/null)" "$(sha256_of "$T/m.docker")"
check "buildah push --format v2s2 of the OCI image" \
    bd push --tls-verify=false --format v2s2 localhost/busybox:oci "docker://$IMG:converted"
assert_eq "converted push is Docker schema 2" "$DOCKER_V2" \
    "$(curl -s -H "$ACCEPT" "$URL/v2/buildah/busybox/manifests/converted" | jq -r .mediaType)"
assert_eq "tags/list after three pushes" "converted docker oci" \
    "$(curl -s "$URL/v2/buildah/busybox/tags/list" | jq -r '.tags | sort | join(" ")')"

# ------------------------------------------------------------ pull back, build on it
check "buildah rm + rmi (nothing local left)" sh -c "buildah --root $T/storage --runroot $T/runroot --storage-driver vfs rm -a && buildah --root $T/storage --runroot $T/runroot --storage-driver vfs rmi -a -f"
check "buildah pull --tls-verify=false" bd pull --tls-verify=false "$IMG:oci"
assert_eq "pulled image has the pushed digest" "$D_OCI" \
    "$(bd images --digests --format '{{.Digest}}' "$IMG:oci" 2>&1 | head -n1)"
check_out CTR2 "buildah from the pulled image" bd from --pull=false "$IMG:oci"
if check_out MNT "buildah mount" bd mount "$CTR2"; then
    assert_files_equal "pulled rootfs holds the pushed busybox" /bin/busybox "$MNT/bin/busybox"
    echo "layer two" >"$MNT/etc/layer-two"
    bd umount "$CTR2" >/dev/null 2>&1
fi
check "buildah commit of the derived image" bd commit --format oci "$CTR2" localhost/derived:1
check "buildah push of the derived image" \
    bd push --tls-verify=false --digestfile "$T/d.derived" localhost/derived:1 "docker://$REG/buildah/derived:1"
curl -s -o "$T/m.derived" -H "$ACCEPT" "$URL/v2/buildah/derived/manifests/1"
assert_eq "derived image: two layers, the first is the base layer" "2 $BASE_LAYER" \
    "$(jq -r '(.layers | length | tostring) + " " + .layers[0].digest' "$T/m.derived")"
LAYER2=$(jq -r '.layers[1].digest' "$T/m.derived")
curl -s "$URL/v2/buildah/derived/blobs/$LAYER2" | gzip -dc 2>/dev/null | tar -tf - >"$T/l2.list" 2>/dev/null
assert_contains "derived image: its own layer holds the new file" "etc/layer-two" "$(cat "$T/l2.list")"

check_berth_log
suite_end
