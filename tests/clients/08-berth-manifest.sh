#!/usr/bin/env bash
# `berth manifest` against the Docker CLI and skopeo: a list made with berth
# manifest create / annotate / push (one image in another repository, so it
# is mounted and copied in) is what `docker manifest inspect` and `skopeo
# inspect --raw` read, and berth manifest inspect prints the same bytes as
# docker manifest inspect, for the list and for a single image. An OCI-only
# list is an OCI index.
. "$(dirname "$0")/lib.sh"
suite_begin berth-manifest

[ -x "$DOCKER" ] || { skip "berth manifest suite" "the docker CLI is not installed (apt-get install docker.io)"; suite_end; }
command -v skopeo >/dev/null || { skip "berth manifest suite" "skopeo (used to push the images) is not installed"; suite_end; }
start_berth
T=$TEST_TMP
# docker manifest talks to the registry only; make sure no engine is used.
export DOCKER_HOST="unix://$T/no-engine.sock"
dk() { "$DOCKER" "$@"; }
sk() { skopeo --policy "$SIGNATURE_POLICY" "$@"; }
bm() { "$BERTH_BIN" --root "$T/client-root" manifest "$@"; }
DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
OCI_INDEX=application/vnd.oci.image.index.v1+json
ACCEPT_ALL="Accept: $OCI_INDEX, $DOCKER_LIST, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

# platforms FILE: "os/arch[/variant]" of each entry of a list, in order.
platforms() { jq -r '[.manifests[].platform | [.os, .architecture, .variant // empty] | join("/")] | join(" ")' "$1"; }
# content_type FILE: the Content-Type of a curl -D header dump.
content_type() { tr -d '\r' <"$1" | awk -F': ' 'tolower($1) == "content-type" { print $2 }'; }

quietly make_oci_image "$T/layout" amd64 amd64 m-amd64 || exit 1
quietly make_oci_image "$T/layout" arm arm m-arm || exit 1
# Docker schema 2 images (this docker CLI may not parse OCI manifests):
# amd64 in another repository than the list, arm in the list's own.
quietly sk copy --format v2s2 --dest-tls-verify=false "oci:$T/layout:amd64" "docker://$REG/src-amd64:1" || exit 1
quietly sk copy --format v2s2 --dest-tls-verify=false "oci:$T/layout:arm" "docker://$REG/app:arm" || exit 1
AMD64=$(manifest_digest src-amd64 1)
ARM=$(manifest_digest app arm)

# ------------------------------------------------------------ create / annotate / push (Docker list)
LIST=$REG/app:list
check "berth manifest create" bm create "$LIST" "$REG/src-amd64:1" "$REG/app:arm"
check "berth manifest annotate --variant v6" bm annotate --variant v6 "$LIST" "$REG/app:arm"
if check_out PUSHED "berth manifest push" bm push "$LIST"; then
    assert_contains "push: amd64 was copied into app first" "Pushed ref $REG/app@$AMD64 with digest: $AMD64" "$PUSHED"
    PUSHED=$(tail -n1 <<<"$PUSHED")
    curl -s -D "$T/hdrs" -o "$T/made" -H "$ACCEPT_ALL" "$URL/v2/app/manifests/list"
    assert_eq "pushed list: the digest berth printed" "$PUSHED" "$(sha256_of "$T/made")"
    assert_eq "pushed list: Content-Type" "$DOCKER_LIST" "$(content_type "$T/hdrs")"
    assert_eq "pushed list: platforms" "linux/arm/v6 linux/amd64" "$(platforms "$T/made")"
    assert_eq "pushed list: entries" "$ARM $AMD64" "$(jq -r '[.manifests[].digest] | join(" ")' "$T/made")"
    assert_eq "the amd64 image is in the list's repository" 200 "$(http_code HEAD "$URL/v2/app/manifests/$AMD64" -H "$ACCEPT_ALL")"
fi

# ------------------------------------------------------------ what docker and skopeo read
if check_out OUT "docker manifest inspect --insecure of berth's list" dk manifest inspect --insecure "$LIST"; then
    printf '%s' "$OUT" >"$T/list.docker"
    assert_eq "docker: it is a manifest list" "$DOCKER_LIST" "$(jq -r .mediaType "$T/list.docker")"
    assert_eq "docker: platforms" "linux/arm/v6 linux/amd64" "$(platforms "$T/list.docker")"
    assert_eq "docker: the document berth pushed" "$(jq -S -c . "$T/made")" "$(jq -S -c . "$T/list.docker")"
    # The local list is still there; a second root reads the registry's.
    if check_out MINE "berth manifest inspect of the pushed list (from the registry)" \
        "$BERTH_BIN" --root "$T/other-root" manifest inspect "$LIST"; then
        assert_eq "berth and docker manifest inspect print the same bytes (list)" "$OUT" "$MINE"
    fi
    check_out MINE "berth manifest inspect of the local list" bm inspect "$LIST" &&
        assert_eq "the local list prints as what was pushed" "$(cat "$T/made")" "$MINE"
fi
if check_out OUT "docker manifest inspect --insecure -v of berth's list" dk manifest inspect --insecure -v "$LIST"; then
    assert_eq "docker -v: architectures" "arm amd64" "$(jq -r '[.[].Descriptor.platform.architecture] | join(" ")' <<<"$OUT")"
    check_out MINE "berth manifest inspect -v of the local list" bm inspect -v "$LIST" &&
        assert_eq "berth -v: the same descriptors and layers as docker -v" \
            "$(jq -S -c '[.[] | {Descriptor, layers: .SchemaV2Manifest.layers}]' <<<"$OUT")" \
            "$(jq -S -c '[.[] | {Descriptor, layers: .SchemaV2Manifest.layers}]' <<<"$MINE")"
fi
if check_out OUT "docker manifest inspect --insecure of a single image" dk manifest inspect --insecure "$REG/app:arm"; then
    check_out MINE "berth manifest inspect of a single image" bm inspect "$REG/app:arm" &&
        assert_eq "berth and docker manifest inspect print the same bytes (image)" "$OUT" "$MINE"
fi
if check_out RAW "skopeo inspect --raw of berth's list" sk inspect --raw --tls-verify=false "docker://$LIST"; then
    assert_eq "skopeo: media type" "$DOCKER_LIST" "$(jq -r .mediaType <<<"$RAW")"
    assert_eq "skopeo: the bytes berth pushed" "$(cat "$T/made")" "$RAW"
fi
check "skopeo inspect of the copied child in app" sk inspect --raw --tls-verify=false "docker://$REG/app@$AMD64"

# ------------------------------------------------------------ an OCI-only list is an OCI index
quietly sk copy --dest-tls-verify=false "oci:$T/layout:amd64" "docker://$REG/oci:amd64" || exit 1
quietly sk copy --dest-tls-verify=false "oci:$T/layout:arm" "docker://$REG/oci:arm" || exit 1
OLIST=$REG/oci:list
check "berth manifest create (OCI images)" bm create "$OLIST" "$REG/oci:amd64" "$REG/oci:arm"
if check_out OPUSHED "berth manifest push --purge (OCI index)" bm push --purge "$OLIST"; then
    if check_out RAW "skopeo inspect --raw of berth's OCI index" sk inspect --raw --tls-verify=false "docker://$OLIST"; then
        assert_eq "skopeo: media type" "$OCI_INDEX" "$(jq -r .mediaType <<<"$RAW")"
        assert_eq "skopeo: platforms" "linux/amd64 linux/arm/v7" "$(platforms /dev/stdin <<<"$RAW")"
        assert_eq "skopeo: the digest berth printed" "$OPUSHED" "sha256:$(printf '%s' "$RAW" | sha256sum | cut -d' ' -f1)"
    fi
    check "skopeo copy --all of berth's OCI index" sk copy --all --src-tls-verify=false "docker://$OLIST" "oci:$T/copied:list"
    assert_eq "--purge removed the local list" "" "$(ls "$T/client-root/manifests" 2>&1 | grep -v "^$(printf '%s' "$REG/app:list" | tr ':/' '%#')\$")"
fi

# ------------------------------------------------------------ errors docker users know
OUT=$(bm create "$LIST" "$REG/app:arm" 2>&1)
assert_contains "create of an existing list without --amend" "refusing to amend an existing manifest list with no --amend flag" "$OUT"
OUT=$(bm create "$REG/app:x" "$LIST" 2>&1)
assert_contains "create with a list as an image" "is a manifest list" "$OUT"
check "berth manifest rm" bm rm "$LIST"
OUT=$(bm push "$LIST" 2>&1)
assert_contains "push of a removed list" "run berth manifest create" "$OUT"

check_berth_log
suite_end
