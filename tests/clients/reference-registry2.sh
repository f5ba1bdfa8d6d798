#!/usr/bin/env bash
# Stands in for `berth serve` with distribution's registry 2.8 (Debian's
# docker-registry), to check that the tier tests the clients and not berth's
# quirks:
#
#   BERTH_BIN=tests/clients/reference-registry2.sh tests/clients/run.sh
#
# Takes the flags the suites pass (serve --addr 127.0.0.1:0 --root DIR
# [--read-only] [--no-delete]) and prints the line start_berth looks for.
# Against registry 2.8 these checks fail, by design of the suites (they test
# berth-only behaviour): tags/list in lexical order (registry 2.8 lists them
# unsorted), berth's own error texts for --read-only and --no-delete, berth
# fsck, and `docker manifest inspect` of an OCI index (registry 2.8 answers
# 404 because the docker CLI leaves OCI manifests out of its Accept; berth
# serves the index and the CLI then cannot parse the entries: a SKIP).
[ "${1:-}" = serve ] || { echo "usage: $0 serve --root DIR [--read-only] [--no-delete]" >&2; exit 2; }
shift
root='' ro=false del=true
while [ $# -gt 0 ]; do
    case $1 in
    --addr) shift ;;
    --root) root=$2; shift ;;
    --read-only) ro=true ;;
    --no-delete) del=false ;;
    esac
    shift
done
[ -n "$root" ] || { echo "--root is required" >&2; exit 2; }
command -v docker-registry >/dev/null || { echo "docker-registry is not installed" >&2; exit 1; }
for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
mkdir -p "$root"
cat >"$root/config.yml" <<C
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $root/data
  delete:
    enabled: $del
  maintenance:
    readonly:
      enabled: $ro
http:
  addr: 127.0.0.1:$port
C
echo "berth registry listening addr=127.0.0.1:$port"
# registry 2.8 reads REGISTRY_* variables as configuration: drop the
# clients' REGISTRY_AUTH_FILE.
env -u REGISTRY_AUTH_FILE docker-registry serve "$root/config.yml" 2>&1 &
pid=$!
trap 'kill "$pid"; wait "$pid"; echo "shut down cleanly"; exit 0' TERM INT
wait "$pid"
