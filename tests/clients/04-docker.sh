#!/usr/bin/env bash
# The Docker engine against berth: a private dockerd (temp data-root,
# exec-root, pidfile and socket; no bridge, no iptables). docker import, tag,
# push, rmi, pull, run, login; a BuildKit build FROM the pushed image, pushed
# (with a cross-repository mount of the base layer); the BuildKit inline-cache
# demo (the seed's curl | jq pipeline reads the cache out of the config);
# and a pull of a multi-arch manifest list.
. "$(dirname "$0")/lib.sh"
suite_begin docker

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null; then
    skip "docker suite" "docker.io is not installed (apt-get install docker.io)"
    suite_end
fi
require_root
start_berth
T=$TEST_TMP
dk() { "$DOCKER" "$@"; }
DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json

if ! start_dockerd; then
    skip "docker engine checks (push, pull, run, build)" "dockerd does not start here: ${DOCKERD_WHY:-see its log}"
    check_berth_log
    suite_end
fi
note "dockerd up with the $DOCKERD_DRIVER storage driver ($DOCKER_HOST)"
pass "dockerd started in a private root ($DOCKERD_DRIVER)"

# push_digest LOG: the digest `docker push` reports.
push_digest() { sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\) size.*/\1/p' "$1" | tail -n1; }

# ------------------------------------------------------------ import, push
quietly make_busybox_tar "$T/bb.tar" || exit 1
IMG=$REG/busybox:1
check "docker import of a busybox rootfs" dk import -c 'CMD ["/bin/sh"]' "$T/bb.tar" localhost/busybox-import:1
check "docker tag" dk tag localhost/busybox-import:1 "$IMG"
check "docker push $IMG" dk push "$IMG"
D1=$(push_digest "$LAST_LOG")
assert_match "docker push reports a digest" '^sha256:[0-9a-f]{64}$' "$D1"
assert_eq "berth's Docker-Content-Digest = the digest docker pushed" "$D1" "$(manifest_digest busybox 1)"
curl -s -o "$T/m.1" -H "Accept: $DOCKER_V2" "$URL/v2/busybox/manifests/1"
assert_eq "docker pushed Docker schema 2" "$DOCKER_V2" "$(jq -r .mediaType "$T/m.1")"
assert_eq "served bytes hash to the pushed digest" "$D1" "$(sha256_of "$T/m.1")"
BASE_LAYER=$(jq -r '.layers[0].digest' "$T/m.1")

# ------------------------------------------------------------ rmi, pull, run
check "docker rmi" dk rmi "$IMG" localhost/busybox-import:1
if dk image inspect "$IMG" >/dev/null 2>&1; then fail "image gone after rmi" "$IMG still present"; fi
check "docker pull $IMG" dk pull "$IMG"
assert_contains "pulled image: RepoDigests has the pushed digest" "$REG/busybox@$D1" \
    "$(dk image inspect --format '{{join .RepoDigests " "}}' "$IMG" 2>&1)"
if CID=$(dk create "$IMG" /bin/true 2>"$T/create.err"); then
    assert_eq "docker create + cp: a file of the pulled image" "berth client test image" \
        "$(dk cp "$CID:/etc/berth-test" - 2>&1 | tar -xOf - 2>&1)"
    dk rm "$CID" >/dev/null 2>&1
else
    fail "docker create of the pulled image" "$(tail -n1 "$T/create.err")"
fi
CAN_RUN=0
if dk run --rm --network none "$IMG" /bin/busybox echo hi >"$T/run.out" 2>"$T/run.err"; then
    CAN_RUN=1
    assert_eq "docker run --rm of the pulled image prints hi" hi "$(cat "$T/run.out")"
else
    skip "docker run of the pulled image" "containers cannot run here: $(tail -n1 "$T/run.err") (image checked with create + cp)"
fi
check "docker pull by digest" dk pull "$REG/busybox@$D1"

# ------------------------------------------------------------ login
check "docker login (no auth configured: must succeed)" \
    sh -c "echo secret | '$DOCKER' login -u anyone --password-stdin '$REG'"
assert_contains "docker login: Login Succeeded" "Login Succeeded" "$(cat "$LAST_LOG")"

# ------------------------------------------------------------ BuildKit build FROM the pushed image
# dockerd runs without a bridge (so it touches no host network): RUN steps
# need --network none.
mkdir -p "$T/ctx"
printf 'hello-from-build\n' >"$T/ctx/hello.txt"
cat >"$T/ctx/Dockerfile" <<EOF
FROM $IMG
COPY hello.txt /hello.txt
RUN ["/bin/busybox", "sh", "-c", "echo built > /built.txt"]
CMD ["/bin/cat", "/hello.txt", "/built.txt"]
EOF
check "docker rmi of the base (the build pulls it from berth)" dk rmi "$IMG"
check "DOCKER_BUILDKIT=1 docker build FROM $IMG" \
    env DOCKER_BUILDKIT=1 "$DOCKER" build --progress plain --network none -t "$REG/built:1" "$T/ctx"
check "docker push of the built image" dk push "$REG/built:1"
assert_contains "push mounts the base layer from the busybox repository" "Mounted from busybox" "$(cat "$LAST_LOG")"
DB=$(push_digest "$LAST_LOG")
curl -s -o "$T/m.built" -H "Accept: $DOCKER_V2" "$URL/v2/built/manifests/1"
assert_eq "built image: served bytes hash to the pushed digest" "$DB" "$(sha256_of "$T/m.built")"
assert_eq "built image: 3 layers, the first is the base layer" "3 $BASE_LAYER" \
    "$(jq -r '(.layers | length | tostring) + " " + .layers[0].digest' "$T/m.built")"
check "docker rmi + pull of the built image" sh -c "'$DOCKER' rmi '$REG/built:1' && '$DOCKER' pull '$REG/built:1'"
if [ "$CAN_RUN" = 1 ]; then
    assert_eq "docker run of the built image" "hello-from-build built" \
        "$(dk run --rm --network none "$REG/built:1" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
else
    skip "docker run of the built image" "containers cannot run here (see above)"
fi

# ------------------------------------------------------------ docker manifest create / push of docker-pushed images
ML=$REG/busybox:list
check "docker manifest create --insecure of the two pushed images" dk manifest create --insecure "$ML" "$IMG" "$REG/built:1"
check "docker manifest annotate --arch arm64" dk manifest annotate --arch arm64 "$ML" "$REG/built:1"
if check_out OUT "docker manifest push --insecure" dk manifest push --insecure "$ML"; then
    curl -s -o "$T/list" -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' "$URL/v2/busybox/manifests/list"
    assert_eq "pushed list hashes to the digest docker printed" "$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$OUT" | tail -n1)" "$(sha256_of "$T/list")"
    assert_eq "pushed list: entries and platforms (any order)" "$(printf '%s\n' "$D1 linux/amd64" "$DB linux/arm64" | sort)" \
        "$(jq -r '.manifests[] | .digest + " " + .platform.os + "/" + .platform.architecture' "$T/list" | sort)"
    assert_eq "pushed list: the built image's manifest was copied into busybox" 200 \
        "$(http_code HEAD "$URL/v2/busybox/manifests/$DB" -H "Accept: $DOCKER_V2")"
    check_out OUT "docker manifest inspect --insecure of the pushed list" dk manifest inspect --insecure "$ML"
    assert_eq "inspect: the document berth serves" "$(jq -S -c . "$T/list")" "$(jq -S -c . <<<"$OUT" 2>&1)"
fi

# ------------------------------------------------------------ the seed's BuildKit cache demo
# Verbatim but for the port (and --network none, see above).
mkdir -p "$T/demo" && cd "$T/demo" || exit 1
cat >Dockerfile <<EOF
FROM $IMG
RUN ["/bin/busybox", "sh", "-c", "echo cached-step > /step.txt"]
EOF
export DOCKER_BUILDKIT=1
check "docker build --tag localhost:$BERTH_PORT/test:1 --build-arg BUILDKIT_INLINE_CACHE=1 ." \
    dk build --network none --tag "localhost:$BERTH_PORT/test:1" --build-arg BUILDKIT_INLINE_CACHE=1 .
check "docker push localhost:$BERTH_PORT/test:1" dk push "localhost:$BERTH_PORT/test:1"
# shellcheck disable=SC2086 # quoted as the seed wrote it
curl -s \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    localhost:$BERTH_PORT/v2/test/manifests/1 |
    jq --raw-output '.config.digest' |
    while read -r CONFIG_DIGEST; do
        curl -s \
            -H "Accept: application/vnd.docker.container.image.v1+json" \
            localhost:$BERTH_PORT/v2/test/blobs/${CONFIG_DIGEST} |
            jq --raw-output '."moby.buildkit.cache.v0"' |
            base64 -d |
            jq
    done >"$T/cache.json" 2>"$T/cache.err"
# (BuildKit of this engine writes the record list; newer ones {layers, records}.)
assert_eq "the config holds BuildKit's inline cache (records with layers)" "true" \
    "$(jq -r '(if type == "object" then .records else . end)
              | (type == "array" and length > 0 and any(.[]; has("layers")))' "$T/cache.json" 2>&1)"
check "docker system prune --all" dk system prune --all --force
check "docker build --cache-from localhost:$BERTH_PORT/test:1 ." \
    dk build --progress plain --network none --cache-from "localhost:$BERTH_PORT/test:1" .
assert_match "the RUN step came from berth's cache (CACHED)" 'RUN .*cached-step.*
#[0-9]+ CACHED' "$(cat "$LAST_LOG")"
unset DOCKER_BUILDKIT
cd "$T" || exit 1

# ------------------------------------------------------------ multi-arch pull
if command -v skopeo >/dev/null; then
    quietly make_oci_image "$T/layout" amd64 amd64 multi-amd64 &&
        quietly make_oci_image "$T/layout" arm64 arm64 multi-arm64 &&
        quietly make_oci_index "$T/layout" multi amd64 arm64 &&
        quietly skopeo --policy "$SIGNATURE_POLICY" copy --all --format v2s2 --dest-tls-verify=false \
            "oci:$T/layout:multi" "docker://$REG/multi:list"
    LIST=$(manifest_digest multi list)
    check "docker pull of a manifest list" dk pull "$REG/multi:list"
    assert_eq "pulled the amd64 entry" "amd64 multi-amd64" \
        "$(dk image inspect --format '{{.Architecture}} {{index .Config.Labels "berth.test.marker"}}' "$REG/multi:list" 2>&1)"
    assert_contains "RepoDigests names the list digest" "$REG/multi@$LIST" \
        "$(dk image inspect --format '{{join .RepoDigests " "}}' "$REG/multi:list" 2>&1)"
    # OCI media types: a single OCI manifest and an OCI index.
    quietly skopeo --policy "$SIGNATURE_POLICY" copy --all --dest-tls-verify=false \
        "oci:$T/layout:multi" "docker://$REG/multi:oci"
    check "docker pull of an OCI index" dk pull "$REG/multi:oci"
    assert_eq "OCI index: pulled the amd64 entry" "amd64 multi-amd64" \
        "$(dk image inspect --format '{{.Architecture}} {{index .Config.Labels "berth.test.marker"}}' "$REG/multi:oci" 2>&1)"
    AMD=$(oci_ref_digest "$T/layout" amd64)
    check "docker pull of an OCI image manifest (by digest)" dk pull "$REG/multi@$AMD"
    if [ "$CAN_RUN" = 1 ]; then
        assert_eq "docker run of the OCI image" "multi-amd64 amd64" \
            "$(dk run --rm --network none "$REG/multi@$AMD" /bin/cat /etc/berth-image 2>&1)"
    fi
    if dk pull --platform linux/arm64 "$REG/multi:list" >"$T/arm.log" 2>&1; then
        assert_eq "docker pull --platform linux/arm64 picks the arm64 entry" "arm64 multi-arm64" \
            "$(dk image inspect --format '{{.Architecture}} {{index .Config.Labels "berth.test.marker"}}' "$REG/multi:list" 2>&1)"
    else
        skip "docker pull --platform linux/arm64" "this engine refuses it: $(tail -n1 "$T/arm.log")"
    fi
else
    skip "docker pull of a manifest list" "skopeo (used to push the list) is not installed"
fi

check_berth_log
if grep -q 'level=fatal\|panic:' "$DOCKERD_LOG"; then fail "dockerd ran without fatal errors" "" "$DOCKERD_LOG"; fi
suite_end
