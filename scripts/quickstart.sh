#!/usr/bin/env bash
# Quick start: a throwaway PostgreSQL cluster whose archive_command is `wal-archiver push`,
# archiving into a local repository (or, with --s3, into a bucket on a local moto server).
# It generates some WAL with pgbench, waits until PostgreSQL has archived it, lists the
# repository, fetches one segment back with `wal-archiver get` and compares it, then stops
# the cluster. Everything lives in $PITR_QUICKSTART_DIR (default /tmp/pitr-quickstart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=local
[ "${1:-}" = "--s3" ] && MODE=s3

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server programs not found: apt-get install postgresql-15" >&2; exit 1; }
WORK=${PITR_QUICKSTART_DIR:-/tmp/pitr-quickstart}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env "$@"; else env "$@"; fi; }

echo "== building wal-archiver" >&2
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pitr-target}"; mkdir -p "$CARGO_TARGET_DIR"; chmod 755 "$CARGO_TARGET_DIR"
fi
cargo build -q -p wal-archiver
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/wal-archiver"

rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
if [ "$MODE" = s3 ]; then
  scripts/s3/moto.sh install
  eval "$(scripts/s3/moto.sh start)"
  curl -fsS -X PUT "$S3_ENDPOINT/quickstart" -o /dev/null
  export PITR_REPO=s3://quickstart/pitr PITR_S3_ENDPOINT=$S3_ENDPOINT
  ENV=(PITR_REPO=$PITR_REPO PITR_S3_ENDPOINT=$S3_ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1)
else
  export PITR_REPO=$WORK/repo
  ENV=(PITR_REPO=$PITR_REPO)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PG=(-h "$WORK" -p "$PORT" -U postgres)

echo "== initdb and start a cluster with archive_command = '$BIN push %p' (repository $PITR_REPO)" >&2
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
archive_mode = on
archive_command = '$BIN push %p'
CONF
as_pg "${ENV[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true' EXIT

echo "== pgbench and three WAL switches" >&2
as_pg "$PGBIN/pgbench" "${PG[@]}" -i -s 5 -q postgres >/dev/null 2>&1
for _ in 1 2 3; do
  as_pg "$PGBIN/pgbench" "${PG[@]}" -n -t 500 postgres >/dev/null 2>&1
  LAST=$(as_pg "$PGBIN/psql" "${PG[@]}" -XAtc "select pg_walfile_name(pg_switch_wal())" postgres)
done
for _ in $(seq 1 600); do
  DONE=$(as_pg "$PGBIN/psql" "${PG[@]}" -XAtc "select coalesce(last_archived_wal,'') >= '$LAST' from pg_stat_archiver" postgres)
  [ "$DONE" = t ] && break; sleep 0.1
done
[ "$DONE" = t ] || { echo "archiving did not catch up; see $WORK/server.log" >&2; exit 1; }
as_pg "$PGBIN/psql" "${PG[@]}" -XAtc "select 'archived: ' || archived_count || ' files, last ' || last_archived_wal || ', failed: ' || failed_count from pg_stat_archiver" postgres

echo "== wal-archiver list" >&2
"$BIN" list

echo "== wal-archiver get $LAST, compared with pg_wal" >&2
"$BIN" get "$LAST" "$WORK/fetched"
cmp "$WORK/fetched" "$WORK/data/pg_wal/$LAST" && echo "$LAST: fetched copy is byte-identical"
