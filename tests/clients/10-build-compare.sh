#!/usr/bin/env bash
# berth build vs BuildKit: every entry of tests/build-compare/corpus must
# build to the same filesystem and config with both (or fail in both).
# The harness is tests/build-compare/run.sh; it reports through lib.sh like
# every suite here, so run.sh counts its checks.
exec bash "$(dirname "$0")/../build-compare/run.sh" "$@"
