#!/usr/bin/env bash
# skopeo against berth: copies both ways in Docker schema 2 and OCI media
# types, oci: and docker-archive: sources, byte-identical raw manifests,
# list-tags, multi-arch indexes and manifest lists with --all, registry to
# registry copies (cross-repository mounts) and delete.
. "$(dirname "$0")/lib.sh"
suite_begin skopeo

command -v skopeo >/dev/null || { skip "skopeo suite" "skopeo is not installed (apt-get install skopeo)"; suite_end; }
start_berth

sk() { skopeo --policy "$SIGNATURE_POLICY" "$@"; }
T=$TEST_TMP
SRC=$T/src
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_INDEX=application/vnd.oci.image.index.v1+json

# The local images: amd64 and arm64 builds of the busybox image, and an index
# of both.
quietly make_oci_image "$SRC" v1 amd64 || exit 1
quietly make_oci_image "$SRC" v1-arm64 arm64 || exit 1
quietly make_oci_index "$SRC" multi v1 v1-arm64 || exit 1
SRC_V1=$(oci_ref_digest "$SRC" v1)
SRC_ARM=$(oci_ref_digest "$SRC" v1-arm64)
SRC_MULTI=$(oci_ref_digest "$SRC" multi)
SRC_V1_BLOB=$(oci_blob_path "$SRC" "$SRC_V1")
SRC_CONFIG=$(jq -r .config.digest "$SRC_V1_BLOB")
SRC_LAYERS=$(jq -r '.layers[].digest' "$SRC_V1_BLOB")

# fetch REPO REF ACCEPT: GET a manifest into $T/body, headers into $T/hdrs.
fetch() {
    curl -s -D "$T/hdrs" -o "$T/body" -H "Accept: $3" "$URL/v2/$1/manifests/$2"
}
hdr() { tr -d '\r' <"$T/hdrs" | awk -v h="$1" -F': ' 'tolower($1) == h { print $2 }'; }

# ------------------------------------------------------------ Docker schema 2
R=$REG/skopeo/busybox
check "copy oci: -> docker:// as Docker schema 2 (--format v2s2)" \
    sk copy --dest-tls-verify=false --format v2s2 --digestfile "$T/d.v2s2" "oci:$SRC:v1" "docker://$R:v2s2"
D_V2S2=$(cat "$T/d.v2s2" 2>/dev/null)
fetch skopeo/busybox v2s2 "$DOCKER_V2"
assert_eq "v2s2 manifest served with its Content-Type" "$DOCKER_V2" "$(hdr content-type)"
assert_eq "v2s2 manifest mediaType field" "$DOCKER_V2" "$(jq -r .mediaType "$T/body")"
assert_eq "v2s2 layers are Docker rootfs.diff.tar.gzip" \
    "application/vnd.docker.image.rootfs.diff.tar.gzip application/vnd.docker.image.rootfs.diff.tar.gzip" \
    "$(jq -r '[.layers[].mediaType] | join(" ")' "$T/body")"
assert_eq "sha256 of the served bytes = digest skopeo pushed" "$D_V2S2" "$(sha256_of "$T/body")"
assert_eq "Docker-Content-Digest = digest skopeo pushed" "$D_V2S2" "$(hdr docker-content-digest)"
cp "$T/body" "$T/v2s2.curl"
check "skopeo inspect --raw (v2s2)" sh -c "skopeo inspect --raw --tls-verify=false docker://$R:v2s2 > $T/v2s2.raw"
assert_files_equal "inspect --raw returns the exact bytes berth serves (v2s2)" "$T/v2s2.curl" "$T/v2s2.raw"
assert_eq "v2s2 keeps the layer digests of the source" "$SRC_LAYERS" "$(jq -r '.layers[].digest' "$T/v2s2.raw")"
assert_eq "v2s2 keeps the config digest of the source" "$SRC_CONFIG" "$(jq -r .config.digest "$T/v2s2.raw")"
check "skopeo inspect --config --raw (v2s2)" sh -c "skopeo inspect --config --raw --tls-verify=false docker://$R:v2s2 > $T/v2s2.config"
assert_files_equal "config blob is byte-identical to the source's" "$(oci_blob_path "$SRC" "$SRC_CONFIG")" "$T/v2s2.config"
if check_out INSPECT "skopeo inspect (v2s2)" sk inspect --tls-verify=false "docker://$R:v2s2"; then
    assert_eq "inspect: Digest" "$D_V2S2" "$(jq -r .Digest <<<"$INSPECT")"
    assert_eq "inspect: Architecture/Os" "amd64/linux" "$(jq -r '.Architecture + "/" + .Os' <<<"$INSPECT")"
    assert_eq "inspect: label from the config" "v1" "$(jq -r '.Labels["berth.test.marker"]' <<<"$INSPECT")"
fi
check "copy docker:// (v2s2) -> oci: layout" \
    sk copy --src-tls-verify=false "docker://$R:v2s2" "oci:$T/back:v2s2"
BACK=$(oci_blob_path "$T/back" "$(oci_ref_digest "$T/back" v2s2)")
assert_eq "copied back: same layer digests" "$SRC_LAYERS" "$(jq -r '.layers[].digest' "$BACK" 2>/dev/null)"
# (skopeo re-serialises the config when it converts schema 2 to OCI; the
# source config is compact JSON without a final newline, so the bytes agree.)
assert_eq "copied back: same config digest" "$SRC_CONFIG" "$(jq -r .config.digest "$BACK" 2>/dev/null)"

# ------------------------------------------------------------ OCI
check "copy oci: -> docker:// in OCI media types (--format oci)" \
    sk copy --dest-tls-verify=false --format oci --digestfile "$T/d.oci" "oci:$SRC:v1" "docker://$R:oci"
assert_eq "OCI push keeps the manifest digest of the source" "$SRC_V1" "$(cat "$T/d.oci" 2>/dev/null)"
fetch skopeo/busybox oci "$OCI_MANIFEST"
assert_eq "OCI manifest served with its Content-Type" "$OCI_MANIFEST" "$(hdr content-type)"
assert_files_equal "OCI manifest served byte-identical to the source" "$SRC_V1_BLOB" "$T/body"
check "skopeo inspect --raw (oci)" sh -c "skopeo inspect --raw --tls-verify=false docker://$R:oci > $T/oci.raw"
assert_files_equal "inspect --raw returns the source manifest bytes (oci)" "$SRC_V1_BLOB" "$T/oci.raw"
check "copy docker:// (oci) -> oci: layout --preserve-digests" \
    sk copy --src-tls-verify=false --preserve-digests "docker://$R:oci" "oci:$T/back:oci"
assert_eq "copied back: same manifest digest" "$SRC_V1" "$(oci_ref_digest "$T/back" oci)"
assert_files_equal "copied back: same config bytes" "$(oci_blob_path "$SRC" "$SRC_CONFIG")" "$(oci_blob_path "$T/back" "$SRC_CONFIG")"
check "pull by digest (docker://...@sha256)" \
    sk copy --src-tls-verify=false "docker://$R@$SRC_V1" "oci:$T/bydigest:x"
assert_eq "pull by digest: same manifest" "$SRC_V1" "$(oci_ref_digest "$T/bydigest" x)"

# ------------------------------------------------------------ tags
check "registry -> registry copy (same repo, new tag)" \
    sk copy --src-tls-verify=false --dest-tls-verify=false "docker://$R:oci" "docker://$R:latest"
check "registry -> registry copy (other repo: blobs mounted or re-sent)" \
    sk copy --src-tls-verify=false --dest-tls-verify=false --preserve-digests "docker://$R:oci" "docker://$REG/skopeo/other:1"
assert_eq "copy into another repository keeps the digest" "$SRC_V1" "$(manifest_digest skopeo/other 1)"
if check_out TAGS "skopeo list-tags" sk list-tags --tls-verify=false "docker://$R"; then
    assert_eq "list-tags: every pushed tag" "latest oci v2s2" "$(jq -r '.Tags | sort | join(" ")' <<<"$TAGS")"
    assert_eq "list-tags: repository name" "$R" "$(jq -r .Repository <<<"$TAGS")"
fi
assert_eq "_catalog lists both repositories" "skopeo/busybox skopeo/other" \
    "$(curl -s "$URL/v2/_catalog" | jq -r '.repositories | map(select(startswith("skopeo/"))) | sort | join(" ")')"

# Names: a repository four components deep, a tag with every allowed kind of character.
DEEP=$REG/skopeo/deep/er/name
check "copy to a four-component repository, tag V1.0_rc-2.x" \
    sk copy --src-tls-verify=false --dest-tls-verify=false "docker://$R:oci" "docker://$DEEP:V1.0_rc-2.x"
assert_eq "deep repository: list-tags" "V1.0_rc-2.x" "$(sk list-tags --tls-verify=false "docker://$DEEP" 2>&1 | jq -r '.Tags | join(" ")' 2>&1)"
assert_eq "deep repository: manifest digest" "$SRC_V1" "$(manifest_digest skopeo/deep/er/name V1.0_rc-2.x)"

# ------------------------------------------------------------ docker-archive
check "make a docker-archive locally (oci: -> docker-archive:)" \
    sk copy "oci:$SRC:v1" "docker-archive:$T/local.tar:skopeo/archive:1"
check "copy docker-archive: -> docker://" \
    sk copy --dest-tls-verify=false --digestfile "$T/d.arch" "docker-archive:$T/local.tar" "docker://$REG/skopeo/archive:1"
check_out ARCH_RAW "inspect --raw of the archive push" sk inspect --raw --tls-verify=false "docker://$REG/skopeo/archive:1"
assert_eq "archive push is Docker schema 2" "$DOCKER_V2" "$(jq -r .mediaType <<<"$ARCH_RAW")"
assert_eq "archive push keeps the config digest" "$SRC_CONFIG" "$(jq -r .config.digest <<<"$ARCH_RAW")"
check "copy docker:// -> docker-archive:" \
    sk copy --src-tls-verify=false "docker://$REG/skopeo/archive:1" "docker-archive:$T/back.tar:skopeo/archive:back"
mkdir -p "$T/backtar"
tar -C "$T/backtar" -xf "$T/back.tar" manifest.json 2>/dev/null
assert_eq "docker-archive pulled back: config is the source config" \
    "${SRC_CONFIG#sha256:}.json" "$(jq -r '.[0].Config' "$T/backtar/manifest.json" 2>/dev/null)"
assert_match "docker-archive pulled back: RepoTags" '^(docker\.io/)?skopeo/archive:back$' "$(jq -r '.[0].RepoTags[0]' "$T/backtar/manifest.json" 2>/dev/null)"

# ------------------------------------------------------------ multi-arch: OCI index
M=$REG/skopeo/multi
check "copy --all of an OCI index -> docker://" \
    sk copy --all --dest-tls-verify=false "oci:$SRC:multi" "docker://$M:oci"
assert_eq "index digest preserved" "$SRC_MULTI" "$(manifest_digest skopeo/multi oci)"
check "skopeo inspect --raw (index)" sh -c "skopeo inspect --raw --tls-verify=false docker://$M:oci > $T/index.raw"
assert_files_equal "inspect --raw returns the source index bytes" "$(oci_blob_path "$SRC" "$SRC_MULTI")" "$T/index.raw"
assert_eq "index served with its Content-Type" "$OCI_INDEX" \
    "$(curl -s -o /dev/null -w '%{content_type}' -H "Accept: $OCI_INDEX" "$URL/v2/skopeo/multi/manifests/oci")"
for child in "$SRC_V1" "$SRC_ARM"; do
    sk inspect --raw --tls-verify=false "docker://$M@$child" >"$T/child.raw" 2>"$T/child.err"
    assert_files_equal "index child $child served byte-identical" "$(oci_blob_path "$SRC" "$child")" "$T/child.raw"
done
if check_out ARM "inspect --override-arch arm64 picks the arm64 child" \
    sk inspect --tls-verify=false --override-arch arm64 --override-variant v8 "docker://$M:oci"; then
    assert_eq "arm64 child: architecture and marker" "arm64 v1-arm64" \
        "$(jq -r '.Architecture + " " + .Labels["berth.test.marker"]' <<<"$ARM")"
fi
check "copy --all docker:// (index) -> oci: layout" \
    sk copy --all --src-tls-verify=false --preserve-digests "docker://$M:oci" "oci:$T/backmulti:multi"
BACK_MULTI=$(oci_ref_digest "$T/backmulti" multi)
assert_eq "index copied back: same digest" "$SRC_MULTI" "$BACK_MULTI"
assert_eq "index copied back: every child digest preserved" "$SRC_V1 $SRC_ARM" \
    "$(jq -r '[.manifests[].digest] | join(" ")' "$(oci_blob_path "$T/backmulti" "$BACK_MULTI")" 2>/dev/null)"
for child in "$SRC_V1" "$SRC_ARM"; do
    assert_files_equal "index copied back: child $child present" \
        "$(oci_blob_path "$SRC" "$child")" "$(oci_blob_path "$T/backmulti" "$child")"
done
check "copy --all registry -> registry (index into another repo)" \
    sk copy --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$M:oci" "docker://$REG/skopeo/multi-copy:1"
assert_eq "index copied between repositories keeps its digest" "$SRC_MULTI" "$(manifest_digest skopeo/multi-copy 1)"

# ------------------------------------------------------------ multi-arch: Docker manifest list
check "copy --all --format v2s2: index -> Docker manifest list" \
    sk copy --all --format v2s2 --dest-tls-verify=false "oci:$SRC:multi" "docker://$M:list"
fetch skopeo/multi list "$DOCKER_LIST"
assert_eq "manifest list served with its Content-Type" "$DOCKER_LIST" "$(hdr content-type)"
LIST_DIGEST=$(hdr docker-content-digest)
assert_eq "manifest list Docker-Content-Digest = sha256 of its bytes" "$(sha256_of "$T/body")" "$LIST_DIGEST"
assert_eq "manifest list platforms" "linux/amd64 linux/arm64/v8" \
    "$(jq -r '[.manifests[].platform | [.os, .architecture, .variant // empty] | join("/")] | join(" ")' "$T/body")"
assert_eq "manifest list children are Docker schema 2" "$DOCKER_V2 $DOCKER_V2" "$(jq -r '[.manifests[].mediaType] | join(" ")' "$T/body")"
cp "$T/body" "$T/list.json"
LIST_CHILDREN=$(jq -r '.manifests[].digest' "$T/list.json")
for child in $LIST_CHILDREN; do
    want_arch=$(jq -r --arg d "$child" '.manifests[] | select(.digest == $d) | .platform.architecture' "$T/list.json")
    cfg=$(curl -s -H "Accept: $DOCKER_V2" "$URL/v2/skopeo/multi/manifests/$child" | jq -r .config.digest)
    assert_eq "list child $child: its config says $want_arch" "$want_arch" \
        "$(curl -s "$URL/v2/skopeo/multi/blobs/$cfg" | jq -r .architecture)"
done
check "copy --all docker:// (manifest list) -> dir: (keeps every manifest as is)" \
    sk copy --all --src-tls-verify=false "docker://$M:list" "dir:$T/listdir"
assert_files_equal "list copied back byte-identical" "$T/list.json" "$T/listdir/manifest.json"
for child in $LIST_CHILDREN; do
    f="$T/listdir/${child#sha256:}.manifest.json"
    assert_eq "list child copied back with its digest ($child)" "$child" "$( [ -f "$f" ] && sha256_of "$f")"
done

# ------------------------------------------------------------ a large layer
# 48 MiB of incompressible data: many read and write chunks on both sides.
head -c $((48 << 20)) /dev/urandom >"$T/big.bin"
if OCI_EXTRA_FILE="$T/big.bin" quietly make_oci_image "$SRC" big amd64; then
    SRC_BIG=$(oci_ref_digest "$SRC" big)
    BIG_LAYER=$(jq -r '.layers[1].digest' "$(oci_blob_path "$SRC" "$SRC_BIG")")
    check "push of an image with a 48 MiB layer" \
        sk copy --dest-tls-verify=false "oci:$SRC:big" "docker://$REG/skopeo/big:1"
    assert_eq "large layer: HEAD gives its size" "$(stat -c %s "$(oci_blob_path "$SRC" "$BIG_LAYER")")" \
        "$(curl -sI "$URL/v2/skopeo/big/blobs/$BIG_LAYER" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }')"
    assert_eq "large layer: GET streams every byte" "$BIG_LAYER" \
        "$(curl -s "$URL/v2/skopeo/big/blobs/$BIG_LAYER" | sha256sum | sed 's/^/sha256:/; s/ .*//')"
    check "pull of the large image back to oci: (--preserve-digests)" \
        sk copy --src-tls-verify=false --preserve-digests "docker://$REG/skopeo/big:1" "oci:$T/bigback:big"
    assert_eq "large image copied back: same digest" "$SRC_BIG" "$(oci_ref_digest "$T/bigback" big)"
    assert_files_equal "large layer copied back byte-identical" \
        "$(oci_blob_path "$SRC" "$BIG_LAYER")" "$(oci_blob_path "$T/bigback" "$BIG_LAYER")"
fi
rm -f "$T/big.bin"

# ------------------------------------------------------------ delete
check "skopeo delete" sk delete --tls-verify=false "docker://$REG/skopeo/archive:1"
assert_eq "deleted manifest is gone (404)" 404 "$(http_code GET "$URL/v2/skopeo/archive/manifests/$(cat "$T/d.arch" 2>/dev/null)")"
if sk inspect --raw --tls-verify=false "docker://$REG/skopeo/archive:1" >/dev/null 2>"$T/inspect.err"; then
    fail "skopeo inspect of a deleted tag fails" "it succeeded"
else
    assert_contains "skopeo inspect of a deleted tag fails: manifest unknown" "manifest unknown" "$(cat "$T/inspect.err")"
fi

check_berth_log
suite_end
