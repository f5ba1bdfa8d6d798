#!/usr/bin/env bash
# The seeds' curl | jq demos, verbatim but for the port: catalog, tags, the
# manifest -> config digest -> config blob pipeline, and the ORAS demo (an
# artifact pushed the way `oras push` does, read back with the OCI Accept
# header: manifest, .layers[].digest, then the blob). Outputs are checked
# exactly.
# shellcheck disable=SC2086 # the demos are quoted as the seeds wrote them
. "$(dirname "$0")/lib.sh"
suite_begin curl-demos

start_berth
T=$TEST_TMP
P=$BERTH_PORT

# ------------------------------------------------------------ test:1, pushed by a real client
quietly make_oci_image "$T/layout" v1 amd64 || exit 1
SRC_MANIFEST=$(oci_blob_path "$T/layout" "$(oci_ref_digest "$T/layout" v1)")
SRC_CONFIG=$(jq -r .config.digest "$SRC_MANIFEST")
if command -v skopeo >/dev/null; then
    check "skopeo copy --format v2s2 oci: -> docker://localhost:$P/test:1" \
        skopeo --policy "$SIGNATURE_POLICY" copy --format v2s2 --dest-tls-verify=false \
        "oci:$T/layout:v1" "docker://localhost:$P/test:1"
else
    skip "push of test:1 with skopeo" "skopeo is not installed; pushing it with curl instead"
    # The same image as plain distribution-API calls, in schema 2 media types.
    for d in $(jq -r '.config.digest, .layers[].digest' "$SRC_MANIFEST"); do
        curl -s -o /dev/null -X POST --data-binary "@$(oci_blob_path "$T/layout" "$d")" \
            -H 'Content-Type: application/octet-stream' "$URL/v2/test/blobs/uploads/?digest=$d"
    done
    jq -c '.mediaType = "application/vnd.docker.distribution.manifest.v2+json"
           | .config.mediaType = "application/vnd.docker.container.image.v1+json"
           | .layers[].mediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"' "$SRC_MANIFEST" |
        curl -s -o /dev/null -X PUT --data-binary @- \
            -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' "$URL/v2/test/manifests/1"
fi

# ------------------------------------------------------------ ORAS: push artifact.txt as test:latest
cd "$T" || exit 1
echo blarg >artifact.txt
# A real ORAS client when there is one: the oras CLI, or the oras Python SDK
# (PyPI `oras`; set ORAS_PYTHON to a python that has it). Otherwise the same
# requests with curl.
ORAS_PY=
for py in ${ORAS_PYTHON:-} python3; do
    if "$py" -c 'import oras.client' >/dev/null 2>&1; then ORAS_PY=$py; break; fi
done
oras_py() { # push|pull
    "$ORAS_PY" - "$1" "localhost:$P" <<'PY'
import sys, oras.client
op, host = sys.argv[1], sys.argv[2]
c = oras.client.OrasClient(hostname=host, insecure=True)
if op == "push":
    r = c.push(files=["artifact.txt"], target=host + "/test:latest")
    sys.exit(0 if r.status_code == 201 else 1)
print(c.pull(target=host + "/test:latest", outdir="out"))
PY
}
if command -v oras >/dev/null; then
    ORAS=cli
    check "oras push localhost:$P/test:latest artifact.txt" oras push --plain-http "localhost:$P/test:latest" artifact.txt
elif [ -n "$ORAS_PY" ]; then
    ORAS=py
    check "oras (Python SDK) push localhost:$P/test:latest artifact.txt" oras_py push
else
    ORAS=
    skip "oras push with a real ORAS client" "neither the oras CLI nor the oras Python SDK is installed (pip install oras); pushing artifact.txt as oras does (blob, empty config, OCI manifest) with curl"
    BLOB=$(sha256_of artifact.txt)
    printf '{}' >config.json
    CFG=$(sha256_of config.json)
    # location HEADERS: the absolute Location of a response, ready for "digest=".
    location() {
        local loc
        loc=$(tr -d '\r' <"$1" | awk -F': ' 'tolower($1) == "location" { print $2 }')
        case $loc in http*) ;; *) loc="$URL$loc" ;; esac
        [[ $loc == *\?* ]] && echo "$loc&" || echo "$loc?"
    }
    # upload_session: POST .../blobs/uploads/, prints the session's Location.
    upload_session() {
        curl -s -D "$T/post.hdrs" -o /dev/null -X POST "$URL/v2/test/blobs/uploads/"
        location "$T/post.hdrs"
    }
    # The blob as oras-go sends it: POST, then PUT ?digest= with the body.
    LOC=$(upload_session)
    assert_eq "PUT of artifact.txt into an upload session: 201" 201 "$(http_code PUT "${LOC}digest=$BLOB" \
        --data-binary @artifact.txt -H 'Content-Type: application/octet-stream')"
    # The config chunked, as streaming clients do: POST, PATCH, PUT ?digest=.
    # Each step goes to the Location of the previous answer.
    LOC=$(upload_session)
    assert_eq "PATCH of the config: 202" 202 "$(http_code PATCH "${LOC%[?&]}" --data-binary @config.json \
        -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-1' -D "$T/patch.hdrs")"
    LOC=$(location "$T/patch.hdrs")
    assert_eq "PUT closing the config upload: 201" 201 "$(http_code PUT "${LOC}digest=$CFG")"
    jq -cn --arg b "$BLOB" --arg c "$CFG" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.unknown.config.v1+json", digest: $c, size: 2},
        layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $b, size: 6,
                  annotations: {"org.opencontainers.image.title": "artifact.txt"}}]}' | tr -d '\n' >manifest.json
    assert_eq "PUT of the artifact manifest as test:latest: 201" 201 "$(http_code PUT "$URL/v2/test/manifests/latest" \
        --data-binary @manifest.json -H 'Content-Type: application/vnd.oci.image.manifest.v1+json')"
fi

# ------------------------------------------------------------ the demos
OUT=$(curl -s http://localhost:$P/v2/_catalog |
    jq --raw-output '.repositories[]')
assert_eq "curl _catalog | jq '.repositories[]'" "test" "$OUT"

OUT=$(curl -s http://localhost:$P/v2/test/tags/list |
    jq --raw-output '.tags[]')
assert_eq "curl tags/list | jq '.tags[]'" "1
latest" "$OUT"

OUT=$(curl -s \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    localhost:$P/v2/test/manifests/1 |
    jq --raw-output '.config.digest')
assert_eq "curl manifest (Docker Accept) | jq '.config.digest'" "$SRC_CONFIG" "$OUT"

OUT=$(curl -s \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    localhost:$P/v2/test/manifests/1 |
    jq --raw-output '.config.digest' |
    while read -r CONFIG_DIGEST; do
        curl -s \
            -H "Accept: application/vnd.docker.container.image.v1+json" \
            localhost:$P/v2/test/blobs/${CONFIG_DIGEST} |
            jq --compact-output
    done)
assert_eq "... | while read CONFIG_DIGEST: curl the config blob | jq" \
    "$(jq --compact-output . "$(oci_blob_path "$T/layout" "$SRC_CONFIG")")" "$OUT"
assert_eq "config blob: architecture and Cmd" "amd64 /bin/sh" "$(jq -r '.architecture + " " + (.config.Cmd | join(" "))' <<<"$OUT")"

# ORAS internals.
OUT=$(curl http://localhost:$P/v2/test/tags/list 2>/dev/null)
assert_eq "curl http://localhost:$P/v2/test/tags/list" '{"name":"test","tags":["1","latest"]}' "$(jq -c . <<<"$OUT")"
OUT=$(curl -sH "Accept: application/vnd.oci.image.manifest.v1+json" \
    http://localhost:$P/v2/test/manifests/latest | jq)
assert_eq "curl -sH 'Accept: OCI manifest' test/manifests/latest | jq: the artifact manifest" \
    "application/vnd.oci.image.manifest.v1+json artifact.txt application/vnd.oci.image.layer.v1.tar" \
    "$(jq -r '.mediaType + " " + .layers[0].annotations["org.opencontainers.image.title"] + " " + .layers[0].mediaType' <<<"$OUT")"
DIGEST=$(curl -sH "Accept: application/vnd.oci.image.manifest.v1+json" \
    http://localhost:$P/v2/test/manifests/latest |
    jq --raw-output '.layers[].digest')
assert_eq "DIGEST=\$(... | jq --raw-output '.layers[].digest')" "$(sha256_of artifact.txt)" "$DIGEST"
OUT=$(curl -sH "Accept: application/vnd.oci.image.manifest.v1+json" \
    http://localhost:$P/v2/test/blobs/${DIGEST})
assert_eq "curl -sH ... test/blobs/\${DIGEST}: the artifact's content" "blarg" "$OUT"
if [ "$ORAS" = cli ]; then
    check "oras pull localhost:$P/test:latest --output out" oras pull --plain-http "localhost:$P/test:latest" --output out
elif [ "$ORAS" = py ]; then
    check "oras (Python SDK) pull localhost:$P/test:latest into out/" oras_py pull
fi
[ -n "$ORAS" ] && assert_eq "cat out/artifact.txt" blarg "$(cat out/artifact.txt 2>&1)"
cd / || exit 1

check_berth_log
suite_end
