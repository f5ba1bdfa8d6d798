#!/usr/bin/env bash
# Real engines run what berth made and pushed: `berth import` of a
# busybox-static rootfs, `berth push` to berth serve and to Debian's
# distribution (docker-registry), then `docker pull` + `docker run` (own
# dockerd) and `podman pull` + `podman run` print the expected output.
# Also: a command on the server's own root goes through its local endpoint
# (serve.sock), so what it stores is served at once, without a push.
. "$(dirname "$0")/lib.sh"
suite_begin berth-push-engines

require_root
start_berth
T=$TEST_TMP
LOCAL="$T/local-root"
B() { "$BERTH_BIN" --root "$LOCAL" "$@"; }
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

quietly make_busybox_tar "$T/bb.tar" || exit 1
export SOURCE_DATE_EPOCH=1700000000
check_out D "berth import of a busybox rootfs" \
    B import -c 'CMD ["/bin/busybox", "echo", "default cmd"]' -m "busybox for the engines" "$T/bb.tar" engines/busybox:1
assert_match "berth import prints the image digest" '^sha256:[0-9a-f]{64}$' "$D"
check_out D2 "berth import again (SOURCE_DATE_EPOCH: same digest)" B import -c 'CMD ["/bin/busybox", "echo", "default cmd"]' -m "busybox for the engines" "$T/bb.tar" engines/busybox:again
assert_eq "the same tarball and time give the same image" "$D" "$D2"

# ------------------------------------------------------------ push
check "berth push to berth serve" B push --quiet "$REG/engines/busybox:1"
assert_eq "berth serve has the image under the digest import printed" "$D" "$(manifest_digest engines/busybox 1)"

# Debian's distribution on a free port, no auth.
DIST=
if command -v docker-registry >/dev/null; then
    DPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$T/dist"
    cat >"$T/dist/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $T/dist/data
http:
  addr: 127.0.0.1:$DPORT
  secret: berth-clients
EOF
    # distribution reads REGISTRY_* variables as configuration: lib.sh's
    # REGISTRY_AUTH_FILE (for podman) would become an `auth` section.
    env -u REGISTRY_AUTH_FILE docker-registry serve "$T/dist/config.yml" >"$T/dist/log" 2>&1 &
    DIST_PID=$!
    defer "kill $DIST_PID 2>/dev/null; wait $DIST_PID 2>/dev/null"
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DPORT/v2/")" = 200 ] && { DIST="127.0.0.1:$DPORT"; break; }
        sleep 0.1
    done
    [ -n "$DIST" ] || fail "docker-registry started" "" "$T/dist/log"
else
    skip "pushes to distribution" "docker-registry is not installed (apt-get install docker-registry)"
fi
if [ -n "$DIST" ]; then
    check "berth push to distribution" B push --quiet "$DIST/engines/busybox:1"
    assert_eq "distribution serves the digest import printed" "$D" \
        "$(curl -s -H "Accept: $OCI_MANIFEST" "http://$DIST/v2/engines/busybox/manifests/1" | sha256sum | sed 's/^/sha256:/; s/ .*//')"
fi

# ------------------------------------------------------------ one root, two processes
check_out SD "berth import on the server's own root (through serve.sock)" \
    "$BERTH_BIN" --root "$BERTH_ROOT_DIR" import "$T/bb.tar" shared/busybox:1
assert_eq "served at once, without a push" "$SD" "$(manifest_digest shared/busybox 1)"
check "berth tag on the server's root" "$BERTH_BIN" --root "$BERTH_ROOT_DIR" tag shared/busybox:1 shared/busybox:2
assert_eq "the new tag is served at once" "$SD" "$(manifest_digest shared/busybox 2)"
check_out RMI "berth rmi on the server's root" "$BERTH_BIN" --root "$BERTH_ROOT_DIR" rmi shared/busybox:2
assert_eq "rmi prints what Docker prints" "Untagged: shared/busybox:2" "$RMI"
assert_eq "the removed tag is gone from the registry" 404 "$(http_code GET "$URL/v2/shared/busybox/manifests/2")"

# ------------------------------------------------------------ docker
if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null; then
    skip "docker pull + run" "docker.io is not installed (apt-get install docker.io)"
elif ! start_dockerd; then
    skip "docker pull + run" "dockerd does not start here: ${DOCKERD_WHY:-see its log}"
else
    for reg in "$REG" ${DIST:+"$DIST"}; do
        IMG=$reg/engines/busybox:1
        check "docker pull $IMG" "$DOCKER" pull "$IMG"
        assert_eq "docker run --rm $IMG busybox echo ok" "ok" \
            "$("$DOCKER" run --rm --network none "$IMG" /bin/busybox echo ok 2>&1)"
        assert_eq "docker run uses the CMD set by import --change" "default cmd" \
            "$("$DOCKER" run --rm --network none "$IMG" 2>&1)"
        "$DOCKER" rmi -f "$IMG" >/dev/null 2>&1
    done
    stop_dockerd "$DOCKERD_PID"
    unset DOCKER_HOST
fi

# ------------------------------------------------------------ podman
if ! command -v podman >/dev/null; then
    skip "podman pull + run" "podman is not installed (apt-get install podman)"
else
    # podman refuses a runroot longer than 50 characters.
    RUNROOT=$(mktemp -d /tmp/b9-runroot.XXXXXX)
    defer "rm -rf $RUNROOT"
    pm() {
        podman --root "$T/storage" --runroot "$RUNROOT" --storage-driver vfs --tmpdir "$T/libpod-tmp" \
            --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
    }
    defer "pm rm -a -f >/dev/null 2>&1; pm rmi -a -f >/dev/null 2>&1"
    # The sandbox's default rlimits are above what a container may set
    # without CAP_SYS_RESOURCE (see 02-podman.sh): explicit limits.
    RUN=(run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    for reg in "$REG" ${DIST:+"$DIST"}; do
        IMG=$reg/engines/busybox:1
        check "podman pull $IMG" pm pull --tls-verify=false "$IMG"
        if pm "${RUN[@]}" "$IMG" /bin/busybox echo ok >"$T/run.out" 2>"$T/run.err"; then
            assert_eq "podman run --rm $IMG busybox echo ok" "ok" "$(cat "$T/run.out")"
            assert_eq "podman run: file from the imported rootfs" "berth client test image" \
                "$(pm "${RUN[@]}" "$IMG" /bin/busybox cat /etc/berth-test 2>&1)"
        else
            skip "podman run of $IMG" "containers cannot run here: $(tail -n 1 "$T/run.err")"
        fi
    done
fi

check_berth_log
suite_end
