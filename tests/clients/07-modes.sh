#!/usr/bin/env bash
# berth's serve modes and lifecycle as real clients see them: concurrent
# pushes sharing layers, a clean SIGTERM stop and a restart on the same root
# (everything still served, fsck clean), --read-only and --no-delete (the
# clients fail and relay berth's reason).
. "$(dirname "$0")/lib.sh"
suite_begin modes

command -v skopeo >/dev/null || { skip "modes suite" "skopeo is not installed (apt-get install skopeo)"; suite_end; }
start_berth
T=$TEST_TMP
ROOT=$BERTH_ROOT_DIR
sk() { skopeo --policy "$SIGNATURE_POLICY" "$@"; }

# ------------------------------------------------------------ concurrent pushes
# Six copies at once: three images (all share the busybox layer), each into
# two repositories, one of them shared.
for i in 1 2 3; do
    quietly make_oci_image "$T/layout" "img$i" amd64 "concurrent-$i" >/dev/null || exit 1
done
pids=()
for i in 1 2 3; do
    sk copy -q --dest-tls-verify=false "oci:$T/layout:img$i" "docker://$REG/modes/shared:$i" >"$T/push-a$i.log" 2>&1 &
    pids+=($!)
    sk copy -q --dest-tls-verify=false "oci:$T/layout:img$i" "docker://$REG/modes/own$i:1" >"$T/push-b$i.log" 2>&1 &
    pids+=($!)
done
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
if [ "$bad" -eq 0 ]; then
    pass "six concurrent skopeo pushes sharing a layer"
else
    fail "six concurrent skopeo pushes sharing a layer" "$bad failed" "$(ls "$T"/push-*.log | head -n1)"
    cat "$T"/push-*.log | sed 's/^/        | /' | head -n 20
fi
for i in 1 2 3; do
    want=$(oci_ref_digest "$T/layout" "img$i")
    assert_eq "concurrent push $i: both repositories serve the image" "$want $want" \
        "$(manifest_digest modes/shared "$i") $(manifest_digest modes/own$i 1)"
done
assert_eq "tags of the shared repository" "1 2 3" "$(curl -s "$URL/v2/modes/shared/tags/list" | jq -r '.tags | join(" ")')"
sk inspect --raw --tls-verify=false "docker://$REG/modes/shared:2" >"$T/before.raw" 2>/dev/null

# ------------------------------------------------------------ stop, fsck, restart
stop_berth
assert_contains "SIGTERM: berth shuts down cleanly" "shut down cleanly" "$(sed 's/\x1b\[[0-9;]*m//g' "$BERTH_LOG")"
check "berth fsck of the root the clients filled" "$BERTH_BIN" fsck --root "$ROOT"
start_berth_on "$ROOT"
check "after a restart: skopeo inspect --raw" sh -c "skopeo inspect --raw --tls-verify=false docker://$REG/modes/shared:2 > $T/after.raw"
assert_files_equal "after a restart: the same manifest bytes" "$T/before.raw" "$T/after.raw"
check "after a restart: pull every image back" sh -c "for i in 1 2 3; do skopeo --policy $SIGNATURE_POLICY copy -q --src-tls-verify=false --preserve-digests docker://$REG/modes/own\$i:1 oci:$T/back:img\$i || exit 1; done"
for i in 1 2 3; do
    assert_eq "after a restart: image $i pulled with its digest" "$(oci_ref_digest "$T/layout" "img$i")" "$(oci_ref_digest "$T/back" "img$i")"
done
check_berth_log

# ------------------------------------------------------------ --read-only
stop_berth
start_berth_on "$ROOT" --read-only
check "read-only: pull still works" sk copy -q --src-tls-verify=false "docker://$REG/modes/shared:1" "oci:$T/ro:x"
quietly make_oci_image "$T/layout" fresh amd64 read-only-push >/dev/null
if sk copy --dest-tls-verify=false "oci:$T/layout:fresh" "docker://$REG/modes/fresh:1" >"$T/ro.log" 2>&1; then
    fail "read-only: skopeo push is refused" "the push succeeded"
else
    assert_contains "read-only: skopeo push fails with berth's reason" "read-only" "$(cat "$T/ro.log")"
fi
if sk delete --tls-verify=false "docker://$REG/modes/own1:1" >"$T/rodel.log" 2>&1; then
    fail "read-only: skopeo delete is refused" "the delete succeeded"
else
    assert_contains "read-only: skopeo delete fails with berth's reason" "read-only" "$(cat "$T/rodel.log")"
fi
assert_eq "read-only: nothing was deleted" 200 "$(http_code HEAD "$URL/v2/modes/own1/manifests/1" -H 'Accept: application/vnd.oci.image.manifest.v1+json')"
assert_eq "read-only: the refused push left no repository" 404 "$(http_code GET "$URL/v2/modes/fresh/tags/list")"
check_berth_log

# ------------------------------------------------------------ --no-delete
stop_berth
start_berth_on "$ROOT" --no-delete
check "no-delete: push works" sk copy -q --dest-tls-verify=false "oci:$T/layout:fresh" "docker://$REG/modes/fresh:1"
if sk delete --tls-verify=false "docker://$REG/modes/fresh:1" >"$T/nodel.log" 2>&1; then
    fail "no-delete: skopeo delete is refused" "the delete succeeded"
else
    assert_contains "no-delete: skopeo delete fails with berth's reason" "deletion is disabled" "$(cat "$T/nodel.log")"
fi
assert_eq "no-delete: the manifest is still there" "$(oci_ref_digest "$T/layout" fresh)" "$(manifest_digest modes/fresh 1)"
check_berth_log

suite_end
