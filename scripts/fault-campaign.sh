#!/usr/bin/env bash
# The fault campaign (docs/reliability.md): every scenario of tests/src/campaign for many
# rounds (kill -9 at random moments, S3 faults through a proxy, a full disk, concurrent
# commands), printing the table of figures. Run before each release; the test suite runs the
# same scenarios for a few rounds (tests/tests/campaign.rs).
#
#   scripts/fault-campaign.sh                  every scenario, 20 rounds, seed 1
#   scripts/fault-campaign.sh --rounds 50 --seed 7 backup-kill restore-kill
#   scripts/fault-campaign.sh --list
#
# Exits 1 if any scenario lost acknowledged data, ended a recovery at a wrong point or broke
# an exit-code contract. Needs root (disk-full scenarios mount a small tmpfs; PostgreSQL runs
# as the postgres user), like scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-test-deps.sh >&2
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD/target" 2>/dev/null \
    && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pitr-target}"
  mkdir -p "$CARGO_TARGET_DIR" && chmod 755 "$CARGO_TARGET_DIR"
fi
eval "$(scripts/s3/moto.sh start)"
trap 'scripts/s3/moto.sh stop' EXIT
cargo build --workspace --bins >&2
target="${CARGO_TARGET_DIR:-target}"
"$target/debug/fault-campaign" "$@"
