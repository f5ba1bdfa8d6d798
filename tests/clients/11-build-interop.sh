#!/usr/bin/env bash
# Real engines run what `berth build` made: built as root and as the
# unprivileged user `berth` (rootless, in a user namespace), pushed to berth
# serve, then `docker pull` + `docker run` (own dockerd) and `podman pull` +
# `podman run` print what the image's CMD prints; the `type=docker` tarball
# goes through `docker load` and `podman load`, the `type=oci` one through
# `umoci unpack` and `podman load`.
. "$(dirname "$0")/lib.sh"
suite_begin build-interop

require_root
start_berth
T=$TEST_TMP
# The user `berth` must reach its directory under the suite's temp dir.
chmod 755 "$T"

quietly make_busybox_tar "$T/bb.tar" || exit 1

# The context: a file to COPY, a RUN whose output depends on running in the
# sandbox, and a chown that must show up as 1000 (not a host subuid).
CTX="$T/ctx"
mkdir -p "$CTX"
echo "hello from berth build" >"$CTX/msg.txt"
cat >"$CTX/Dockerfile" <<'EOF'
FROM base:1
COPY msg.txt /msg.txt
RUN echo "built as uid $(id -u)" > /built && echo owned > /owned && chown 1000:1000 /owned
CMD ["/bin/cat", "/msg.txt", "/built"]
EOF
WANT=$'hello from berth build\nbuilt as uid 0'
# Reproducible builds: root and rootless must then make the same image.
export SOURCE_DATE_EPOCH=1700000000

# ------------------------------------------------------------ build as root
LOCAL="$T/root-store"
B() { "$BERTH_BIN" --root "$LOCAL" "$@"; }
check "berth import of a busybox rootfs (root)" B import -m busybox "$T/bb.tar" base:1
check "berth build -t REG/... --push (root)" \
    B build --progress plain -t "$REG/interop/root:1" --push "$CTX"
check "berth build --output type=docker + type=oci (root, cached)" \
    B build --progress plain -t interop/root:1 \
    --output "type=docker,dest=$T/root.docker.tar" \
    --output "type=oci,dest=$T/root.oci.tar" "$CTX"
assert_contains "the tarball build reused the cache" "CACHED" "$(cat "$LAST_LOG")"
ROOT_DIGEST=$(manifest_digest interop/root 1)
assert_match "berth serve has interop/root:1" '^sha256:[0-9a-f]{64}$' "$ROOT_DIGEST"

# ------------------------------------------------------------ build as `berth`
RL_OK=0
if ! id berth >/dev/null 2>&1 || ! grep -q '^berth:' /etc/subuid; then
    skip "rootless build" "no user berth with an /etc/subuid range"
else
    RL="$T/rootless"
    mkdir -p "$RL"
    # A private copy of the binary: run.sh's copy lives in a root-only dir.
    cp "$BERTH_BIN" "$RL/berth"
    cp -a "$CTX" "$RL/ctx" # -a: COPY keeps mtimes, the digests compare
    cp "$T/bb.tar" "$RL/bb.tar"
    chown -R berth: "$RL"
    RB() {
        runuser -u berth -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$RL" \
            DOCKER_CONFIG="$RL/.docker" NO_PROXY=127.0.0.1 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
            "$RL/berth" --root "$RL/store" "$@"
    }
    if check "berth import of a busybox rootfs (as berth)" RB import -m busybox "$RL/bb.tar" base:1 &&
        check "berth build -t REG/... --push (as berth)" \
            RB build --progress plain -t "$REG/interop/rootless:1" --push "$RL/ctx"; then
        RL_OK=1
        assert_eq "rootless and root builds make the same image (SOURCE_DATE_EPOCH)" \
            "$ROOT_DIGEST" "$(manifest_digest interop/rootless 1)"
        check "berth build --output type=docker (as berth)" \
            RB build --progress plain -t interop/rootless:1 \
            --output "type=docker,dest=$RL/rootless.docker.tar" "$RL/ctx"
    fi
fi

# ------------------------------------------------------------ umoci
if ! command -v umoci >/dev/null; then
    skip "umoci unpack of type=oci" "umoci is not installed (apt-get install umoci)"
else
    mkdir -p "$T/oci-layout"
    tar -xf "$T/root.oci.tar" -C "$T/oci-layout"
    REF_NAME=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"] // empty' "$T/oci-layout/index.json")
    assert_eq "type=oci names the image by its tag" "1" "$REF_NAME"
    if check "umoci unpack of the type=oci tarball" \
        umoci unpack --rootless --image "$T/oci-layout:1" "$T/bundle"; then
        assert_eq "umoci's rootfs has the COPYed file" "hello from berth build" "$(cat "$T/bundle/rootfs/msg.txt")"
        assert_eq "umoci's config has the CMD" '["/bin/cat","/msg.txt","/built"]' \
            "$(jq -c '.process.args' "$T/bundle/config.json")"
    fi
fi

# ------------------------------------------------------------ docker
if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null; then
    skip "docker pull/load + run" "docker.io is not installed (apt-get install docker.io)"
elif ! start_dockerd; then
    skip "docker pull/load + run" "dockerd does not start here: ${DOCKERD_WHY:-see its log}"
else
    D() { "$DOCKER" "$@"; }
    IMGS=("$REG/interop/root:1")
    [ "$RL_OK" = 1 ] && IMGS+=("$REG/interop/rootless:1")
    for IMG in "${IMGS[@]}"; do
        check "docker pull $IMG" D pull "$IMG"
        assert_eq "docker run --rm $IMG prints its CMD's output" "$WANT" \
            "$(D run --rm --network none "$IMG" 2>&1)"
        assert_eq "docker run: /owned belongs to 1000:1000 ($IMG)" "1000:1000" \
            "$(D run --rm --network none "$IMG" /bin/busybox stat -c %u:%g /owned 2>&1)"
    done
    check_out LOADED "docker load < type=docker tarball" D load -i "$T/root.docker.tar"
    assert_contains "docker load names the image" "interop/root:1" "$LOADED"
    assert_eq "docker run --rm of the loaded image" "$WANT" \
        "$(D run --rm --network none interop/root:1 2>&1)"
    assert_eq "docker image ID = the config digest berth built" \
        "$(jq -r '.[0].Config' <(tar -xOf "$T/root.docker.tar" manifest.json) | sed 's|blobs/sha256/|sha256:|')" \
        "$(D image inspect --format '{{.Id}}' interop/root:1 2>&1)"
    if [ "$RL_OK" = 1 ]; then
        D rmi -f interop/root:1 >/dev/null 2>&1
        check "docker load < rootless type=docker tarball" D load -i "$RL/rootless.docker.tar"
        assert_eq "docker run of the rootless-built, loaded image" "$WANT" \
            "$(D run --rm --network none interop/rootless:1 2>&1)"
    fi
    stop_dockerd "$DOCKERD_PID"
    unset DOCKER_HOST
fi

# ------------------------------------------------------------ podman
if ! command -v podman >/dev/null; then
    skip "podman pull/load + run" "podman is not installed (apt-get install podman)"
else
    pm() {
        podman --root "$T/storage" --runroot "$T/runroot" --storage-driver vfs --tmpdir "$T/libpod-tmp" \
            --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
    }
    defer "pm rm -a -f >/dev/null 2>&1; pm rmi -a -f >/dev/null 2>&1"
    # The sandbox's default rlimits are above what a container may set
    # without CAP_SYS_RESOURCE (see 02-podman.sh): explicit limits.
    RUN=(run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    IMGS=("$REG/interop/root:1")
    [ "$RL_OK" = 1 ] && IMGS+=("$REG/interop/rootless:1")
    for IMG in "${IMGS[@]}"; do
        check "podman pull $IMG" pm pull --tls-verify=false "$IMG"
        if pm "${RUN[@]}" "$IMG" >"$T/run.out" 2>"$T/run.err"; then
            assert_eq "podman run --rm $IMG prints its CMD's output" "$WANT" "$(cat "$T/run.out")"
            assert_eq "podman run: /owned belongs to 1000:1000 ($IMG)" "1000:1000" \
                "$(pm "${RUN[@]}" "$IMG" /bin/busybox stat -c %u:%g /owned 2>&1)"
        else
            skip "podman run of $IMG" "containers cannot run here: $(tail -n 1 "$T/run.err")"
        fi
    done
    check_out PLOADED "podman load of the type=docker tarball" pm load -i "$T/root.docker.tar"
    assert_contains "podman load names the image" "interop/root:1" "$PLOADED"
    assert_eq "podman run of the loaded docker tarball" "$WANT" \
        "$(pm "${RUN[@]}" docker.io/interop/root:1 2>&1)"
    check_out PLOADED "podman load of the type=oci tarball" pm load -i "$T/root.oci.tar"
    assert_match "podman load reads the OCI archive" 'Loaded image' "$PLOADED"
fi

check_berth_log
suite_end
