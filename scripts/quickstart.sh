#!/usr/bin/env bash
# Quick start: pitr's main job end to end on a throwaway PostgreSQL cluster, each step printed
# with the command you would type.
#
#   1. a cluster whose archive_command is `wal-archiver push` into a repository (a local
#      directory; with --s3 a bucket on a local S3 server, moto);
#   2. `basebackup create`;
#   3. rows written into a table, and the time noted;
#   4. the accident: DROP TABLE;
#   5. `pitr-restore plan --target-time <just before the drop>`;
#   6. `pitr-restore --target-time <just before the drop> --start` into a new directory;
#   7. the table is back, with every row.
#
# Programs: the installed ones when `wal-archiver`, `basebackup` and `pitr-restore` are on
# PATH (e.g. from the Debian package) or in $PITR_BIN_DIR; otherwise this checkout is built in
# release mode first (about 6 minutes on 2 cores the first time, seconds afterwards). The
# rest takes about 20 seconds. Needs PostgreSQL's server programs (Debian: postgresql-15;
# `scripts/install-test-deps.sh` installs them). Everything lives in $PITR_QUICKSTART_DIR
# (default /tmp/pitr-quickstart), removed at the start of the next run; both servers are
# stopped at the end. Exits non-zero if any step fails or the table does not come back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=local
[ "${1:-}" = "--s3" ] && MODE=s3

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server programs not found: apt-get install postgresql-15" >&2; exit 1; }
WORK=${PITR_QUICKSTART_DIR:-/tmp/pitr-quickstart}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env "$@"; else env "$@"; fi; }
step() { printf '\n== %s\n' "$1" >&2; }
# Prints the command as a user would type it, then runs it (as the postgres OS user when we
# are root: PostgreSQL and its archive_command run as that user).
run() {
  local shown="" a
  for a in "$@"; do
    case "$a" in
      *[!A-Za-z0-9_./:=@%+,-]*|'') shown+=" '${a//\'/\'\\\'\'}'" ;;
      *) shown+=" $a" ;;
    esac
  done
  printf '$%s\n' "$shown" >&2
  as_pg "${ENV[@]}" PATH="$BIN_DIR:$PGBIN:$PATH" "$@"
}
sql() { as_pg "$PGBIN/psql" -X -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$1" -U postgres -d postgres -c "$2"; }

START=$(date +%s)
if [ -n "${PITR_BIN_DIR:-}" ]; then
  BIN_DIR=$PITR_BIN_DIR
elif command -v wal-archiver >/dev/null && command -v basebackup >/dev/null && command -v pitr-restore >/dev/null; then
  BIN_DIR=$(dirname "$(command -v pitr-restore)")
else
  step "building pitr (release)"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pitr-target}"; mkdir -p "$CARGO_TARGET_DIR"; chmod 755 "$CARGO_TARGET_DIR"
  fi
  cargo build --release -q -p wal-archiver -p basebackup -p pitr-restore
  BIN_DIR="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
fi
for p in wal-archiver basebackup pitr-restore; do
  [ -x "$BIN_DIR/$p" ] || { echo "$BIN_DIR/$p is missing" >&2; exit 1; }
done
BUILT=$(date +%s)

rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
if [ "$MODE" = s3 ]; then
  scripts/s3/moto.sh install
  eval "$(scripts/s3/moto.sh start)"
  curl -fsS -X PUT "$S3_ENDPOINT/quickstart" -o /dev/null
  REPO=s3://quickstart/pitr
  ENV=(PITR_REPO=$REPO PITR_S3_ENDPOINT=$S3_ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1)
else
  REPO=$WORK/repo
  ENV=(PITR_REPO=$REPO)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/restored" -m fast -w stop >/dev/null 2>&1 || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
  if [ "$MODE" = s3 ]; then scripts/s3/moto.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "1. a PostgreSQL cluster archiving into $REPO"
echo "(the repository comes from PITR_REPO here; in production put repo = \"...\" into /etc/pitr/pitr.toml)" >&2
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
archive_mode = on
archive_command = '$BIN_DIR/wal-archiver push %p'
CONF
printf "postgresql.conf: archive_mode = on, archive_command = 'wal-archiver push %%p'\n" >&2
as_pg "${ENV[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
as_pg "$PGBIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 2 -q postgres >/dev/null 2>&1

step "2. a base backup"
run basebackup create -d "host=$WORK port=$PORT user=postgres"
run basebackup list

step "3. rows written"
sql "$PORT" "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 1000) g"
echo "orders: $(sql "$PORT" "SELECT count(*) FROM orders") rows" >&2
sleep 1
TARGET=$(sql "$PORT" "SELECT clock_timestamp()")
echo "the time now: $TARGET" >&2
sleep 1

step "4. the accident"
echo "\$ psql -c 'DROP TABLE orders'" >&2
sql "$PORT" "DROP TABLE orders"
LAST=$(sql "$PORT" "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 600); do
  DONE=$(sql "$PORT" "SELECT coalesce(last_archived_wal, '') >= '$LAST' FROM pg_stat_archiver")
  [ "$DONE" = t ] && break; sleep 0.1
done
[ "$DONE" = t ] || { echo "archiving did not catch up; see $WORK/server.log" >&2; exit 1; }
echo "(the WAL with the drop is archived: $LAST)" >&2

step "5. the plan: which backup and which WAL restore to just before the drop"
run pitr-restore plan --target-time "$TARGET"

step "6. the restore, started and promoted at the target"
run pitr-restore --target-time "$TARGET" --pgdata "$WORK/restored" --start \
  --set port="$RPORT" --set unix_socket_directories="$WORK" --set listen_addresses= --set archive_mode=off

step "7. the table is back"
COUNT=$(sql "$RPORT" "SELECT count(*) FROM orders")
echo "orders in the restored cluster: $COUNT rows" >&2
[ "$COUNT" = 1000 ] || { echo "quick start FAILED: expected 1000 rows, found $COUNT" >&2; exit 1; }
END=$(date +%s)
echo >&2
echo "quick start done: the dropped table was restored ($((BUILT - START)) s to build, $((END - BUILT)) s for the rest; files in $WORK)" >&2
