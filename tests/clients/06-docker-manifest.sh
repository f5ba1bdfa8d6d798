#!/usr/bin/env bash
# `docker manifest` (the Docker CLI alone, no engine) against berth: inspect
# --insecure of a Docker manifest list, an OCI index and a single manifest
# (pushed with skopeo from hand-made multi-arch images), and a list made with
# docker manifest create / annotate / push.
. "$(dirname "$0")/lib.sh"
suite_begin docker-manifest

[ -x "$DOCKER" ] || { skip "docker manifest suite" "the docker CLI is not installed (apt-get install docker.io)"; suite_end; }
command -v skopeo >/dev/null || { skip "docker manifest suite" "skopeo (used to push the images) is not installed"; suite_end; }
start_berth
T=$TEST_TMP
# The manifest commands talk to the registry only; make sure no engine is used.
export DOCKER_HOST="unix://$T/no-engine.sock"
dk() { "$DOCKER" "$@"; }
sk() { skopeo --policy "$SIGNATURE_POLICY" "$@"; }
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
OCI_INDEX=application/vnd.oci.image.index.v1+json
ACCEPT_ALL="Accept: $OCI_INDEX, $DOCKER_LIST, $DOCKER_V2, application/vnd.oci.image.manifest.v1+json"

quietly make_oci_image "$T/layout" amd64 amd64 multi-amd64 || exit 1
quietly make_oci_image "$T/layout" arm64 arm64 multi-arm64 || exit 1
quietly make_oci_index "$T/layout" multi amd64 arm64 || exit 1
quietly sk copy --all --format v2s2 --dest-tls-verify=false "oci:$T/layout:multi" "docker://$REG/multi:list" || exit 1
quietly sk copy --all --dest-tls-verify=false "oci:$T/layout:multi" "docker://$REG/multi:oci" || exit 1
quietly sk copy --format v2s2 --dest-tls-verify=false "oci:$T/layout:amd64" "docker://$REG/single-amd64:1" || exit 1
quietly sk copy --format v2s2 --dest-tls-verify=false "oci:$T/layout:arm64" "docker://$REG/single-arm64:1" || exit 1

# platforms FILE: "os/arch[/variant]" of each entry of a list, in order.
platforms() { jq -r '[.manifests[].platform | [.os, .architecture, .variant // empty] | join("/")] | join(" ")' "$1"; }

# ------------------------------------------------------------ inspect a Docker manifest list
curl -s -o "$T/list" -H "$ACCEPT_ALL" "$URL/v2/multi/manifests/list"
if check_out OUT "docker manifest inspect --insecure (manifest list)" dk manifest inspect --insecure "$REG/multi:list"; then
    printf '%s' "$OUT" >"$T/list.docker"
    assert_eq "inspect: it is a manifest list" "$DOCKER_LIST" "$(jq -r .mediaType "$T/list.docker")"
    assert_eq "inspect: the entries' digests are berth's" "$(jq -r '[.manifests[].digest] | join(" ")' "$T/list")" \
        "$(jq -r '[.manifests[].digest] | join(" ")' "$T/list.docker")"
    assert_eq "inspect: platforms" "linux/amd64 linux/arm64/v8" "$(platforms "$T/list.docker")"
    assert_eq "inspect: the same document berth serves" "$(jq -S -c . "$T/list")" "$(jq -S -c . "$T/list.docker")"
fi
if check_out OUT "docker manifest inspect --insecure -v (manifest list)" dk manifest inspect --insecure -v "$REG/multi:list"; then
    assert_eq "inspect -v: each entry resolved to its schema 2 manifest" "2 $DOCKER_V2 $DOCKER_V2" \
        "$(jq -r '[length, (.[].SchemaV2Manifest.mediaType)] | map(tostring) | join(" ")' <<<"$OUT")"
    assert_eq "inspect -v: architectures" "amd64 arm64" "$(jq -r '[.[].Descriptor.platform.architecture] | join(" ")' <<<"$OUT")"
    for i in 0 1; do
        d=$(jq -r ".[$i].Descriptor.digest" <<<"$OUT")
        curl -s -o "$T/child" -H "$ACCEPT_ALL" "$URL/v2/multi/manifests/$d"
        assert_eq "inspect -v: entry $i's layers are those berth serves" "$(jq -r '[.layers[].digest] | join(" ")' "$T/child")" \
            "$(jq -r ".[$i].SchemaV2Manifest.layers | map(.digest) | join(\" \")" <<<"$OUT")"
    done
fi

# ------------------------------------------------------------ inspect an OCI index and a single manifest
curl -s -o "$T/index" -H "$ACCEPT_ALL" "$URL/v2/multi/manifests/oci"
if dk manifest inspect --insecure "$REG/multi:oci" >"$T/oci.out" 2>&1; then
    OUT=$(cat "$T/oci.out")
    pass "docker manifest inspect --insecure (OCI index)"
    assert_eq "inspect: the index's entries" "$(jq -r '[.manifests[].digest] | join(" ")' "$T/index")" \
        "$(jq -r '[.manifests[].digest] | join(" ")' <<<"$OUT")"
    assert_eq "inspect: the index's platforms" "linux/amd64 linux/arm64/v8" "$(platforms /dev/stdin <<<"$OUT")"
elif grep -q 'unsupported manifest media type.*application/vnd.oci.image.manifest.v1+json' "$T/oci.out"; then
    # The CLI got the index, then could not parse its OCI image manifests:
    # docker 20.10's CLI registers no OCI manifest type (registry:2 answers
    # it 404 for the same reason: it leaves OCI out of its Accept).
    skip "docker manifest inspect --insecure (OCI index)" "this docker CLI ($("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null)) cannot parse OCI image manifests: $(tail -n1 "$T/oci.out")"
else
    fail "docker manifest inspect --insecure (OCI index)" "" "$T/oci.out"
fi
curl -s -o "$T/single" -H "$ACCEPT_ALL" "$URL/v2/single-amd64/manifests/1"
if check_out OUT "docker manifest inspect --insecure (single image)" dk manifest inspect --insecure "$REG/single-amd64:1"; then
    assert_eq "inspect: the same schema 2 manifest berth serves" "$(jq -S -c . "$T/single")" "$(jq -S -c . <<<"$OUT")"
fi
if dk manifest inspect --insecure "$REG/multi:nope" >"$T/nope.out" 2>&1; then
    fail "docker manifest inspect of an unknown tag fails" "it succeeded: $(cat "$T/nope.out")"
else
    assert_contains "docker manifest inspect of an unknown tag: no such manifest" "no such manifest" "$(cat "$T/nope.out")"
fi

# ------------------------------------------------------------ docker manifest create / annotate / push
# docker manifest push re-serialises each entry the way the docker engine
# writes schema 2 manifests (json.MarshalIndent, 3 spaces) and puts it under
# the digest of those bytes, while the list names the digest it read. So the
# entries must be in that form already, as images pushed by docker are (with
# skopeo's compact JSON, registry:2 rejects the list just the same: manifest
# blob unknown). Re-put both images that way.
for arch in amd64 arm64; do
    curl -s -H "Accept: $DOCKER_V2" "$URL/v2/single-$arch/manifests/1" | jq --indent 3 . | head -c -1 >"$T/docker-$arch.json"
    assert_eq "re-put of the $arch image in docker's formatting: 201" 201 "$(http_code PUT "$URL/v2/single-$arch/manifests/docker" \
        --data-binary "@$T/docker-$arch.json" -H "Content-Type: $DOCKER_V2")"
done
LIST=$REG/made:list
check "docker manifest create --insecure" dk manifest create --insecure "$LIST" "$REG/single-amd64:docker" "$REG/single-arm64:docker"
check "docker manifest annotate --arch arm64 --variant v8" \
    dk manifest annotate --arch arm64 --variant v8 "$LIST" "$REG/single-arm64:docker"
if check_out PUSHED "docker manifest push --insecure" dk manifest push --insecure "$LIST"; then
    PUSHED=$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$PUSHED" | tail -n1)
    curl -s -D "$T/hdrs" -o "$T/made" -H "$ACCEPT_ALL" "$URL/v2/made/manifests/list"
    assert_eq "pushed list: the digest docker printed" "$PUSHED" "$(sha256_of "$T/made")"
    assert_eq "pushed list: Content-Type" "$DOCKER_LIST" \
        "$(tr -d '\r' <"$T/hdrs" | awk -F': ' 'tolower($1) == "content-type" { print $2 }')"
    assert_eq "pushed list: platforms" "linux/amd64 linux/arm64/v8" "$(platforms "$T/made")"
    want="$(manifest_digest single-amd64 docker) $(manifest_digest single-arm64 docker)"
    assert_eq "pushed list: entries are the two images" "$want" "$(jq -r '[.manifests[].digest] | join(" ")' "$T/made")"
    for d in $want; do
        assert_eq "pushed list: entry $d was copied into the list's repository" 200 \
            "$(http_code HEAD "$URL/v2/made/manifests/$d" -H "$ACCEPT_ALL")"
    done
    check_out OUT "docker manifest inspect --insecure of the pushed list" dk manifest inspect --insecure "$LIST"
    assert_eq "inspect of the pushed list: the same document" "$(jq -S -c . "$T/made")" "$(jq -S -c . <<<"$OUT" 2>&1)"
fi

check_berth_log
suite_end
