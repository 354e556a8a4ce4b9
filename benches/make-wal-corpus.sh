#!/usr/bin/env bash
# make-wal-corpus.sh N OUTDIR — a reusable corpus of at least N real 16 MiB WAL segments.
#
# Starts a throwaway PostgreSQL 15 cluster whose archive_command copies every segment into
# OUTDIR/wal, loads it with `pgbench -i` (bulk COPY WAL) and then runs pgbench (TPC-B-like
# OLTP, full-page images after each checkpoint) in 20 s slices until N segments are archived.
# OUTDIR also gets pgdata-stub/{PG_VERSION,global/pg_control} (what pgBackRest needs to accept
# the segments: same system identifier) and corpus.info. The cluster is always removed.
#
# Runs as the `postgres` OS user (re-executes itself via runuser when started as root).
# Knobs: PGBIN (/usr/lib/postgresql/15/bin), CORPUS_SCALE (pgbench -i scale, 20),
# CORPUS_CLIENTS (4), CORPUS_PORT (54391), CORPUS_MAX_S (seconds of pgbench at most, 1800).
set -euo pipefail

N=${1:?usage: make-wal-corpus.sh N OUTDIR}
OUT=${2:?usage: make-wal-corpus.sh N OUTDIR}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SCALE=${CORPUS_SCALE:-20} CLIENTS=${CORPUS_CLIENTS:-4} PORT=${CORPUS_PORT:-54391} MAXS=${CORPUS_MAX_S:-1800}

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$OUT" && chown postgres: "$OUT"
  exec runuser -u postgres -- env PGBIN="$PGBIN" CORPUS_SCALE="$SCALE" CORPUS_CLIENTS="$CLIENTS" \
    CORPUS_PORT="$PORT" CORPUS_MAX_S="$MAXS" bash "$(readlink -f "$0")" "$N" "$(readlink -f "$OUT")"
fi

export PATH=$PGBIN:$PATH LC_ALL=C
log() { echo "[$(date +%T)] $*" >&2; }
mkdir -p "$OUT/wal"
OUT=$(cd "$OUT" && pwd)
[ -z "$(ls -A "$OUT/wal")" ] || { log "$OUT/wal is not empty"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pitr-corpus.XXXXXX")
D=$WORK/pgdata
cleanup() {
  [ -f "$D/postmaster.pid" ] && pg_ctl -D "$D" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

initdb -D "$D" -U postgres -A trust --no-sync -E UTF8 >/dev/null
cat >> "$D/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_buffers = 256MB
max_wal_size = 1GB
wal_level = replica
wal_compression = off
full_page_writes = on
checkpoint_timeout = 1min
synchronous_commit = off
archive_mode = on
archive_command = 'test ! -f $OUT/wal/%f && cp %p $OUT/wal/%f.tmp && mv $OUT/wal/%f.tmp $OUT/wal/%f'
CONF
pg_ctl -D "$D" -l "$WORK/server.log" -w start >/dev/null
export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres
count() { find "$OUT/wal" -maxdepth 1 -regextype egrep -regex '.*/[0-9A-F]{24}' | wc -l; }

t0=$SECONDS
log "pgbench -i -s $SCALE"
pgbench -i -s "$SCALE" -q postgres >/dev/null 2>&1
log "$(count) segments archived after the load"
while [ "$(count)" -lt "$N" ]; do
  [ $((SECONDS - t0)) -lt "$MAXS" ] || { log "only $(count) segments after ${MAXS}s"; exit 1; }
  pgbench -c "$CLIENTS" -j 2 -T 20 -n postgres 2>/dev/null | grep '^tps' || true
  log "$(count) / $N segments archived"
done
pg_ctl -D "$D" -m fast -w stop >/dev/null   # the shutdown checkpoint archives what is left

mkdir -p "$OUT/pgdata-stub/global"
cp "$D/PG_VERSION" "$OUT/pgdata-stub/"
cp "$D/global/pg_control" "$OUT/pgdata-stub/global/"
chmod 700 "$OUT/pgdata-stub"
{
  echo "segments: $(count) ($(cat "$OUT"/wal/[0-9A-F]* | wc -c) bytes), $(ls "$OUT/wal" | head -1) .. $(ls "$OUT/wal" | tail -1)"
  echo "workload: pgbench -i -s $SCALE (bulk COPY), then pgbench -c $CLIENTS -j 2 TPC-B-like in 20 s slices"
  echo "settings: wal_level=replica full_page_writes=on wal_compression=off checkpoint_timeout=1min synchronous_commit=off"
  echo "server: $(postgres --version), system identifier $(pg_controldata "$D" | awk -F': *' '/system identifier/{print $2}')"
  echo "generated: $(date -u +%FT%TZ) in $((SECONDS - t0)) s"
} > "$OUT/corpus.info"
cat "$OUT/corpus.info" >&2
