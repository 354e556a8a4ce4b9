#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, starts the S3 test
# servers (moto for the whole suite, s3s-fs for strict conformance), runs every test of the
# workspace against real PostgreSQL and real S3, and stops the servers again.
# Extra arguments go to the test runner (e.g. scripts/test.sh -E 'test(archive)').
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-test-deps.sh

# PostgreSQL runs archive_command and restore_command as the `postgres` OS user when the
# tests run as root: it must be able to execute our binaries. If this checkout is not
# reachable by that user (e.g. under /root), build into a target directory that is.
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD/target" 2>/dev/null \
    && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pitr-target}"
  mkdir -p "$CARGO_TARGET_DIR" && chmod 755 "$CARGO_TARGET_DIR"
  echo "checkout not readable by the postgres user: building in $CARGO_TARGET_DIR" >&2
fi

eval "$(scripts/s3/moto.sh start)"
eval "$(scripts/s3/s3s-fs.sh start)"
trap 'scripts/s3/moto.sh stop; scripts/s3/s3s-fs.sh stop' EXIT

cargo build --workspace --all-targets
# The release build and the Debian package first, on their own: the package test and the
# quick start use them, and a release build inside the parallel test run would compete with
# the other tests for the cores.
scripts/package.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
