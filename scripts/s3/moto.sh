#!/usr/bin/env bash
# moto_server (in-memory S3 mock, Python) on loopback, for tests and the quick-start.
#   moto.sh install   # venv + pip install (~20 s, ~150 MB); quick no-op when already installed
#   moto.sh start     # starts (or finds running) moto, waits until ready, prints export lines
#   moto.sh stop      # stops the server this script started
# Env: PITR_TOOLS (install root, default ~/.cache/pitr-tools; venv in $PITR_TOOLS/moto-venv),
#      MOTO_VENV (venv path override), S3_PORT (default: a free port),
#      PITR_RUN (run state, default $TMPDIR/pitr-s3; this server's in $PITR_RUN/moto).
# moto accepts any credentials and keeps every object in RAM; it verifies no signatures or
# checksums. Use it for semantics (conditional writes are atomic), never for benchmarks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
VERSION="${MOTO_VERSION:-5.2.5}"
VENV="${MOTO_VENV:-$PITR_TOOLS/moto-venv}"
DIR="$PITR_RUN/moto"
MARK="$VENV/.pitr-moto-$VERSION"

case "${1:-}" in
install)
  if [ -f "$MARK" ] && [ -x "$VENV/bin/moto_server" ]; then
    echo "moto $VERSION already installed in $VENV" >&2
    exit 0
  fi
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  # Running pip as root inside a venv is fine; silence its warning.
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  # crc32c + awscrt: without them moto silently stores a CRC32 where CRC32C/CRC64NVME is asked for.
  "$VENV/bin/pip" install --quiet "moto[s3]==$VERSION" flask flask-cors crc32c awscrt
  touch "$MARK"
  echo "moto $VERSION installed in $VENV" >&2
  ;;
start)
  [ -x "$VENV/bin/moto_server" ] || { echo "moto is not installed: run $0 install" >&2; exit 1; }
  mkdir -p "$DIR"
  if pid="$(alive_pid "$DIR/pid")"; then
    PORT="$(cat "$DIR/port")"
    echo "moto already running (pid $pid) on port $PORT" >&2
  else
    PORT="${S3_PORT:-$(free_port)}"
    # setsid: its own session, so it outlives this script and the caller's terminal.
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" </dev/null >"$DIR/moto.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/pid"
    echo "$PORT" >"$DIR/port"
  fi
  for _ in $(seq 1 300); do   # up to 30 s (about 0.6 s normally, 1.5 s on a cold start)
    if [ "$(http_status "http://127.0.0.1:$PORT/")" = 200 ]; then
      echo "export S3_ENDPOINT=http://127.0.0.1:$PORT PITR_TEST_MOTO_ENDPOINT=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$DIR/moto.log" >&2; rm -f "$DIR/pid" "$DIR/port"; exit 1; }
    sleep 0.1
  done
  echo "moto did not become ready on port $PORT; log: $DIR/moto.log" >&2
  exit 1
  ;;
stop)
  stop_server "$DIR"
  ;;
*) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
