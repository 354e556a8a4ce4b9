# Shared helpers for the S3 test-server scripts (sourced, not run).
# PITR_TOOLS: where test tools are installed (default ~/.cache/pitr-tools).
# PITR_RUN:   where running servers keep their pid, log and data (default $TMPDIR/pitr-s3).
PITR_TOOLS="${PITR_TOOLS:-${HOME:-/root}/.cache/pitr-tools}"
PITR_RUN="${PITR_RUN:-${TMPDIR:-/tmp}/pitr-s3}"

# A free TCP port on loopback (the kernel picks one; it is released before the server binds).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# HTTP status of GET url, or 000 when nothing answers.
http_status() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

# pid in file $1 if that process is alive.
alive_pid() {
  [ -f "$1" ] || return 1
  local pid
  pid="$(cat "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Stops the server whose pid is in $1/pid (only that process).
stop_server() {
  local dir="$1" pid
  if pid="$(alive_pid "$dir/pid")"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid" "$dir/port"
}
