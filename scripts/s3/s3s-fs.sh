#!/usr/bin/env bash
# s3s-fs (filesystem-backed S3 server from the s3s project, Rust) on loopback, for tests.
#   s3s-fs.sh install   # cargo install (~3 min, once); quick no-op when already installed
#   s3s-fs.sh start     # starts (or finds running) s3s-fs, waits until ready, prints export lines
#   s3s-fs.sh stop      # stops the server this script started
# Env: PITR_TOOLS (install root, default ~/.cache/pitr-tools; binary $PITR_TOOLS/s3s-fs/bin/s3s-fs),
#      S3S_BIN (binary override), S3_PORT (default: a free port),
#      S3_ACCESS_KEY / S3_SECRET_KEY (default test-access-key / test-secret-key),
#      PITR_RUN (run state, default $TMPDIR/pitr-s3; this server's in $PITR_RUN/s3s-fs,
#      objects are plain files under $PITR_RUN/s3s-fs/root/<bucket>/<key>).
# s3s-fs verifies SigV4 and checksums (strict), but its conditional writes are not atomic and
# a key cannot also be a "directory" of another key (x and x/y cannot both exist).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
VERSION="${S3S_VERSION:-0.14.1}"   # 0.15+ need rustc 1.96
ROOT="$PITR_TOOLS/s3s-fs"
BIN="${S3S_BIN:-$ROOT/bin/s3s-fs}"
DIR="$PITR_RUN/s3s-fs"
AK="${S3_ACCESS_KEY:-test-access-key}"
SK="${S3_SECRET_KEY:-test-secret-key}"

case "${1:-}" in
install)
  if [ -x "$BIN" ] && grep -qs "\"s3s-fs $VERSION " "$ROOT/.crates.toml"; then
    echo "s3s-fs $VERSION already installed in $ROOT" >&2
    exit 0
  fi
  mkdir -p "$ROOT"
  # Its own target dir, so it neither shares nor locks the project's.
  CARGO_TARGET_DIR="$PITR_TOOLS/.s3s-fs-build" \
    cargo install s3s-fs --version "$VERSION" --features binary --locked --root "$ROOT"
  rm -rf "$PITR_TOOLS/.s3s-fs-build"
  echo "s3s-fs $VERSION installed in $ROOT" >&2
  ;;
start)
  [ -x "$BIN" ] || { echo "s3s-fs is not installed: run $0 install" >&2; exit 1; }
  mkdir -p "$DIR/root"
  if pid="$(alive_pid "$DIR/pid")"; then
    PORT="$(cat "$DIR/port")"
    echo "s3s-fs already running (pid $pid) on port $PORT" >&2
  else
    PORT="${S3_PORT:-$(free_port)}"
    # With --access-key/--secret-key every request must be SigV4-signed with them.
    setsid "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$AK" --secret-key "$SK" "$DIR/root" \
      </dev/null >"$DIR/s3s-fs.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/pid"
    echo "$PORT" >"$DIR/port"
  fi
  for _ in $(seq 1 300); do   # up to 30 s; any HTTP answer (403 to unsigned curl) means ready
    if [ "$(http_status "http://127.0.0.1:$PORT/")" != 000 ]; then
      echo "export S3_ENDPOINT=http://127.0.0.1:$PORT PITR_TEST_S3S_ENDPOINT=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK PITR_TEST_S3S_ACCESS_KEY=$AK PITR_TEST_S3S_SECRET_KEY=$SK AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$DIR/s3s-fs.log" >&2; rm -f "$DIR/pid" "$DIR/port"; exit 1; }
    sleep 0.1
  done
  echo "s3s-fs did not become ready on port $PORT; log: $DIR/s3s-fs.log" >&2
  exit 1
  ;;
stop)
  stop_server "$DIR"
  ;;
*) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
