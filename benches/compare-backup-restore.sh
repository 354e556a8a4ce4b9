#!/usr/bin/env bash
# compare-backup-restore.sh — base backup, restore and time to a PITR target (RTO) of pitr
# (basebackup create, pitr-restore) next to pg_basebackup and pgBackRest, on ONE pgbench
# database, every tool in the same run, plus the raw disk write speed with fsync as the floor.
#
#  1. template: a PostgreSQL 15 cluster with `pgbench -i -s $SCALE` (built once per scale
#     and kept in $BENCH_TMP/template-s$SCALE, since scale 200 takes several minutes);
#  2. the cluster under test: a copy of the template with archive_mode = on and ONE
#     archive_command feeding the WAL repositories, pitr's (plain, then client-side
#     encrypted), then pgBackRest's:
#        wal-archiver --repo $W/pitr-repo push %p && wal-archiver --repo $W/pitr-enc-repo
#          --encryption-key-file $W/pitr.key push %p && pgbackrest ... archive-push %p
#     Every tool's backup waits for the WAL it needs to be archived (basebackup create checks
#     its repository, pgBackRest's archive-check, the server's own wait for pg_basebackup
#     -X none), so each of them waits for this same command: the same cost for all three;
#  3. RUNS x backup, the three tools in turn (order rotated per run, pitr first in the last
#     run so that it never restores the most recent backup in step 5):
#       pitr        basebackup create (defaults: zstd 3, 2 compression threads, 16 MiB chunks)
#       pitr-enc    the same into the encrypted repository (--encryption-key-file)
#       pgbasebackup  pg_basebackup -Ft -X none -c fast --compress=server-zstd:3
#       pgbackrest  pgbackrest backup --type=full, zst:3, process-max 2, start-fast
#  4. RUNS x restore of the newest backup into an empty directory, then `sync -f` (syncfs)
#     of its file system so that every tool is timed until the data is durable:
#       pitr        pitr-restore --pgdata DIR --target immediate (syncs by itself)
#       pitr-enc    the same from the encrypted repository
#       pgbackrest  pgbackrest restore, process-max 2 (fsyncs each file by itself)
#       dd          dd if=/dev/zero bs=1M conv=fsync, as many bytes as the data directory
#                   without pg_wal: what the disk writes with fsync (the floor)
#       dd-direct   the same with bs=16M oflag=direct: the disk without the page cache
#                   (steadier on this VM, whose page-cache writes vary up to 6x)
#  5. PITR: pgbench -c 2 -j 2 runs until PITR_WAL_MB of WAL were written after the backups;
#     a marker row 'before' is committed, the target time T taken 1 s later, a row 'after'
#     1 s after that; PITR_TAIL_MB more WAL, pg_switch_wal(), wait until archived (both
#     repositories, same command), server stopped. Both tools recover the same WAL to T.
#     RUNS x (order rotated):
#       pitr        pitr-restore --pgdata DIR --target-time T --start --set archive_mode=off
#                   --set port=$RPORT   (restore, start, wait until promoted, smoke query)
#       pgbackrest  pgbackrest restore --type=time --target=T --target-action=promote, then
#                   port/archive_mode=off appended, pg_ctl start -w, poll until
#                   pg_is_in_recovery() is false (every 0.1 s); archive-get is asynchronous
#                   (archive-async=y, process-max 2: its best case); spool emptied per run
#     RTO = wall time from the tool's start to a promoted server. A run is correct iff
#     exactly the 'before' row is present.
# Timed commands run under GNU time: max RSS = the largest single process of the tool's
# process tree (pgBackRest's local workers included; the PostgreSQL server, which does the
# compression for pg_basebackup server-zstd, and restore_command are not). Before each timed
# step: `sync` and wait until no background process of the tools is left (pitr push-ahead /
# prefetch workers, pgBackRest async processes).
#
# Started as root it installs what is missing (pgbackrest, GNU time), builds the release
# binaries (cargo build --release -p wal-archiver -p basebackup -p pitr-restore), copies them
# to $BENCH_TMP/bin (concurrent rebuilds cannot change them mid-run) and measures as the
# `postgres` OS user. Before the timed steps it waits while another benchmark matching
# WAIT_FOR (default: compare-push-get) runs. Results: a section appended to benches/RESULTS.md
# (RESULTS_MD) and raw figures in $BENCH_TMP/results.tsv.
# Knobs: SCALE (200), RUNS (3), BENCH_TMP (/tmp/pitr-bench/backup-restore), PITR_WAL_MB
# (1024 at scale >= 200, else 256), PITR_TAIL_MB (32), BR_PORT (54420; +1 for restored
# servers), PGBIN, RESULTS_MD, NO_BUILD=1, BENCH_KEEP=1 (keep the work directory),
# DROP_TEMPLATE=1 (also remove the template at the end), PREPARE_ONLY=1 (build the template
# and stop), WAIT_FOR (pgrep -f pattern),
# BENCH_LIMIT (seconds, 7200).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export SCALE=${SCALE:-200}
export RUNS=${RUNS:-3}
export BENCH_TMP=${BENCH_TMP:-/tmp/pitr-bench/backup-restore}
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PITR_WAL_MB=${PITR_WAL_MB:-$([ "$SCALE" -ge 200 ] && echo 1024 || echo 256)}
export PITR_TAIL_MB=${PITR_TAIL_MB:-32}
export BR_PORT=${BR_PORT:-54420}
export WAIT_FOR=${WAIT_FOR:-compare-push-get}
RESULTS_MD=${RESULTS_MD:-$HERE/RESULTS.md}
export LC_ALL=C TZ=UTC
log() { echo "[$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- outer: setup and report
if [ -z "${PITR_BENCH_INNER:-}" ]; then
  [ -x "$PGBIN/pg_ctl" ] || die "no PostgreSQL in $PGBIN (apt-get install postgresql-15, or set PGBIN)"
  missing=()
  command -v pgbackrest >/dev/null || missing+=(pgbackrest)
  [ -x /usr/bin/time ] || missing+=(time)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "please install: ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
  fi
  if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p wal-archiver -p basebackup -p pitr-restore"
    (cd "$ROOT" && cargo build --release -p wal-archiver -p basebackup -p pitr-restore)
  fi
  mkdir -p "$BENCH_TMP"
  rm -rf "$BENCH_TMP/bin" "$BENCH_TMP/run" "$BENCH_TMP/report.md"
  mkdir -p "$BENCH_TMP/bin"
  for b in wal-archiver basebackup pitr-restore; do cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/$b" "$BENCH_TMP/bin/$b"; done
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- common wal-archiver basebackup pitr-restore 2>/dev/null || rev="$rev + uncommitted changes"
  export PITR_REV="$rev, built $(date -u -r "${CARGO_TARGET_DIR:-$ROOT/target}/release/pitr-restore" +%FT%TZ)"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$BENCH_TMP" "$BENCH_TMP"/bin "$BENCH_TMP"/bin/*
    runuser -u postgres -- env PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-7200}" bash "$HERE/compare-backup-restore.sh"
  else
    PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-7200}" bash "$HERE/compare-backup-restore.sh"
  fi
  [ -s "$BENCH_TMP/report.md" ] || exit 0   # PREPARE_ONLY
  [ -f "$RESULTS_MD" ] || printf '%s\n' "# pitr benchmark results" > "$RESULTS_MD"
  { echo; cat "$BENCH_TMP/report.md"; } >> "$RESULTS_MD"
  cat "$BENCH_TMP/report.md"
  log "appended to $RESULTS_MD"
  exit 0
fi

# ---------------------------------------------------------------- inner: measurements
export PATH=$PGBIN:$PATH
export PGHOST=$BENCH_TMP/sock PGUSER=postgres PGDATABASE=postgres
BIN=$BENCH_TMP/bin
W=$BENCH_TMP/run
T=$BENCH_TMP/template-s$SCALE
PORT=$BR_PORT RPORT=$((BR_PORT + 1))
TSV=$BENCH_TMP/results.tsv
PGBR_CONF=$W/pgbackrest.conf
mkdir -p "$PGHOST" "$W/log"
: > "$TSV"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$TSV"; } # phase tool run metric value
psqlq() { psql -X -p "$1" -Atq -v ON_ERROR_STOP=1 -c "$2"; }
pg_conf() { local d=$1; shift; printf '%s\n' "$@" >> "$d/postgresql.conf"; }
STARTED=()
pg_start() { STARTED+=("$1"); pg_ctl -D "$1" -l "$1.log" -w -t 600 start >/dev/null; }
pg_stop() {
  [ -f "$1/postmaster.pid" ] || return 0
  pg_ctl -D "$1" -m "${2:-fast}" -w -t 300 stop >/dev/null 2>&1 || pg_ctl -D "$1" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$? d
  for d in "${STARTED[@]}"; do pg_stop "$d" immediate; done
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$W"
  [ -z "${DROP_TEMPLATE:-}" ] || rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 124' TERM INT
pgbr() { pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }
# wait until no background process of the tools is left (push-ahead, prefetch, async)
quiesce() {
  local deadline=$(($(date +%s) + 120))
  while pgrep -u "$(id -u)" -f "$BIN/wal-archiver|pgbackrest.*$PGBR_CONF" >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "tool processes still running after 120 s: $(pgrep -u "$(id -u)" -af "$BIN/|$PGBR_CONF" | head -3)"; break; }
    sleep 0.2
  done
  sync
}
# timed NAME CMD... : runs CMD under GNU time, stdout/stderr to $W/log/NAME.{out,err};
# sets SECS (wall), RSS_MIB (max RSS) and CPU_S (user+sys)
timed() {
  local name=$1 t0; shift
  t0=$(now)
  if ! /usr/bin/time -f '%M %U %S' -o "$W/log/$name.time" "$@" > "$W/log/$name.out" 2> "$W/log/$name.err"; then
    tail -5 "$W/log/$name.err" >&2
    die "$name failed: $*"
  fi
  SECS=$(elapsed "$t0")
  read -r rss usr sys < <(tail -1 "$W/log/$name.time")
  RSS_MIB=$(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}')
  CPU_S=$(awk -v a="$usr" -v b="$sys" 'BEGIN{printf "%.2f", a+b}')
}
wait_other_bench() {
  local said=""
  while pgrep -f "$WAIT_FOR" >/dev/null; do
    [ -n "$said" ] || log "waiting: another benchmark is running ($(pgrep -af "$WAIT_FOR" | head -1 | cut -c1-100))"
    said=1
    sleep 10
  done
}

# 1. template --------------------------------------------------------------------
if [ ! -f "$T/ok" ]; then
  rm -rf "$T"; mkdir -p "$T"
  log "building the template: pgbench -i -s $SCALE (scale 200 takes several minutes)"
  initdb -D "$T/pgdata" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  pg_conf "$T/pgdata" "port = $PORT" "listen_addresses = ''" "unix_socket_directories = '$PGHOST'" \
    "shared_buffers = 256MB" "max_wal_size = 1GB" "wal_level = replica" "max_wal_senders = 4" \
    "logging_collector = off" "log_checkpoints = on" "synchronous_commit = off" \
    "checkpoint_timeout = 5min" "timezone = 'UTC'" "log_timezone = 'UTC'" "archive_mode = off"
  pg_start "$T/pgdata"
  pgbench -p "$PORT" -i -s "$SCALE" -q postgres > "$T/pgbench-init.log" 2>&1 || { tail "$T/pgbench-init.log" >&2; die "pgbench -i failed"; }
  psqlq "$PORT" "create table pitr_marker(id int primary key, note text, ts timestamptz default clock_timestamp()); checkpoint"
  pg_stop "$T/pgdata"; STARTED=()
  touch "$T/ok"
fi

if [ -n "${PREPARE_ONLY:-}" ]; then
  log "template $T ready (PREPARE_ONLY: nothing measured)"
  : > "$BENCH_TMP/report.md"
  exit 0
fi

# 2. the cluster under test --------------------------------------------------------
rm -rf "$W"; mkdir -p "$W/log" "$W/pitr-repo" "$W/pitr-enc-repo" "$W/pgbb" "$W/pgbr/repo" "$W/pgbr/log" "$W/pgbr/lock" "$W/pgbr/spool"
D=$W/pgdata
log "copying the template (scale $SCALE)"
cp -a "$T/pgdata" "$D"
cat > "$PGBR_CONF" <<CONF
[global]
repo1-path=$W/pgbr/repo
repo1-retention-full=100
log-path=$W/pgbr/log
lock-path=$W/pgbr/lock
spool-path=$W/pgbr/spool
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=3
process-max=2
archive-async=y
start-fast=y

[bench]
pg1-path=$D
pg1-port=$PORT
pg1-socket-path=$PGHOST
CONF
PITR_PUSH="$BIN/wal-archiver --repo $W/pitr-repo push %p"
KEY=$W/pitr.key
"$BIN/wal-archiver" keys new-key-file "$KEY" > /dev/null
ENC=(--repo "$W/pitr-enc-repo" --encryption-key-file "$KEY")
PITR_ENC_PUSH="$BIN/wal-archiver ${ENC[*]} push %p"
PGBR_PUSH="pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
ACMD="$PITR_PUSH && $PITR_ENC_PUSH && $PGBR_PUSH"
pg_conf "$D" "port = $PORT" "archive_mode = on" "archive_command = '$ACMD'"
pg_start "$D"
pgbr stanza-create > "$W/log/stanza-create.log" 2>&1 || { cat "$W/log/stanza-create.log" >&2; die "pgbackrest stanza-create failed"; }
DB_BYTES=$(psqlq "$PORT" "select sum(pg_database_size(datname)) from pg_database")
DATA_BYTES=$(du -sb --exclude=pg_wal "$T/pgdata" | cut -f1)
DB_MB=$(awk -v b="$DB_BYTES" 'BEGIN{printf "%.0f", b/1e6}')
log "database $DB_MB MB (data directory without pg_wal: $((DATA_BYTES / 1000000)) MB); $RUNS runs"
wait_other_bench
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_START=$(date -u +%FT%TZ)

# rotate LIST RUN: the list rotated so that the last run starts with its first element
rotate() {
  local -a l; read -r -a l <<< "$1"
  local k=${#l[@]} i
  for i in $(seq 0 $((k - 1))); do printf '%s ' "${l[$(((i + RUNS - $2) % k))]}"; done
}

# 3. backups -------------------------------------------------------------------------
for run in $(seq 1 "$RUNS"); do
  for t in $(rotate "pitr pitr-enc pgbasebackup pgbackrest" "$run"); do
    quiesce
    record backup "$t" "$run" load "$(load1)"
    case $t in
      pitr)
        timed "backup.$t.$run" "$BIN/basebackup" --repo "$W/pitr-repo" --dbname "host=$PGHOST port=$PORT user=postgres" create --label "bench $run"
        id=$(tail -1 "$W/log/backup.$t.$run.out")
        size=$(du -sb "$W/pitr-repo/main/backups/$id" | cut -f1) ;;
      pitr-enc)
        timed "backup.$t.$run" "$BIN/basebackup" "${ENC[@]}" --dbname "host=$PGHOST port=$PORT user=postgres" create --label "bench $run"
        id=$(tail -1 "$W/log/backup.$t.$run.out")
        size=$(du -sb "$W/pitr-enc-repo/main/backups/$id" | cut -f1) ;;
      pgbasebackup)
        timed "backup.$t.$run" pg_basebackup -h "$PGHOST" -p "$PORT" -D "$W/pgbb/$run" -Ft -X none -c fast --compress=server-zstd:3 -l "bench $run"
        size=$(du -sb "$W/pgbb/$run" | cut -f1)
        rm -rf "$W/pgbb/$run" ;;
      pgbackrest)
        timed "backup.$t.$run" pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup
        size=$(du -sb "$(ls -d "$W/pgbr/repo/backup/bench/"*F | sort | tail -1)" | cut -f1) ;;
    esac
    record backup "$t" "$run" seconds "$SECS"
    record backup "$t" "$run" rss_mib "$RSS_MIB"
    record backup "$t" "$run" cpu_s "$CPU_S"
    record backup "$t" "$run" stored_bytes "$size"
    log "backup run $run $t: $SECS s, $((size / 1000000)) MB stored, max RSS $RSS_MIB MiB"
  done
done

# 4. restores ------------------------------------------------------------------------
R=$W/restore
for run in $(seq 1 "$RUNS"); do
  for t in $(rotate "pitr pitr-enc pgbackrest dd dd-direct" "$run"); do
    rm -rf "$R" "$W/dd.bin"
    case $t in pitr*) ;; *) mkdir -m 700 "$R" ;; esac
    quiesce
    record restore "$t" "$run" load "$(load1)"
    t0=$(now)
    case $t in
      pitr) timed "restore.$t.$run" "$BIN/pitr-restore" --repo "$W/pitr-repo" --pgdata "$R" --target immediate ;;
      pitr-enc) timed "restore.$t.$run" "$BIN/pitr-restore" "${ENC[@]}" --pgdata "$R" --target immediate ;;
      pgbackrest) timed "restore.$t.$run" pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$R" restore ;;
      dd) timed "restore.$t.$run" dd if=/dev/zero of="$W/dd.bin" bs=1M count=$((DATA_BYTES / 1048576)) conv=fsync ;;
      dd-direct) timed "restore.$t.$run" dd if=/dev/zero of="$W/dd.bin" bs=16M count=$((DATA_BYTES / 16777216)) oflag=direct conv=fsync ;;
    esac
    tool_s=$SECS
    if [ "${t%-direct}" = dd ]; then sync -f "$W/dd.bin"; else sync -f "$R"; fi
    total=$(elapsed "$t0")
    if [ "${t%-direct}" = dd ]; then bytes=$(stat -c %s "$W/dd.bin"); else bytes=$(du -sb "$R" | cut -f1); fi
    record restore "$t" "$run" seconds "$total"
    record restore "$t" "$run" tool_seconds "$tool_s"
    record restore "$t" "$run" bytes "$bytes"
    record restore "$t" "$run" rss_mib "$RSS_MIB"
    record restore "$t" "$run" cpu_s "$CPU_S"
    log "restore run $run $t: $total s (tool $tool_s s), $((bytes / 1000000)) MB, max RSS $RSS_MIB MiB"
  done
done
rm -rf "$R" "$W/dd.bin"

# 5. PITR workload and RTO ---------------------------------------------------------------
wal_mb_since() { psqlq "$PORT" "select (pg_current_wal_lsn() - '$1'::pg_lsn)/1e6"; }
quiesce
log "PITR workload: pgbench until $PITR_WAL_MB MB of WAL, target, then $PITR_TAIL_MB MB more"
lsn0=$(psqlq "$PORT" "select pg_current_wal_lsn()")
pgbench -p "$PORT" -c 2 -j 2 -T 3600 -n postgres > "$W/log/pgbench.log" 2>&1 &
PGB=$!
deadline=$(($(date +%s) + 1800))
while awk -v a="$(wal_mb_since "$lsn0")" -v b="$PITR_WAL_MB" 'BEGIN{exit !(a<b)}'; do
  [ "$(date +%s)" -lt "$deadline" ] || { kill "$PGB"; die "pgbench too slow"; }
  sleep 0.5
done
psqlq "$PORT" "insert into pitr_marker(id, note) values (1, 'before')"
sleep 1
TARGET=$(psqlq "$PORT" "select clock_timestamp()")
TARGET_LSN=$(psqlq "$PORT" "select pg_current_wal_lsn()")
sleep 1
psqlq "$PORT" "insert into pitr_marker(id, note) values (2, 'after')"
lsn1=$(psqlq "$PORT" "select pg_current_wal_lsn()")
deadline=$(($(date +%s) + 300))
while awk -v a="$(wal_mb_since "$lsn1")" -v b="$PITR_TAIL_MB" 'BEGIN{exit !(a<b)}' && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
kill -TERM "$PGB" 2>/dev/null || true
wait "$PGB" 2>/dev/null || true
last=$(psqlq "$PORT" "select pg_walfile_name(pg_switch_wal())")
deadline=$(($(date +%s) + 900))
until [ "$(psqlq "$PORT" "select coalesce(last_archived_wal >= '$last', false) from pg_stat_archiver")" = t ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "WAL $last not archived after 900 s"
  sleep 0.2
done
pg_stop "$D"
# WAL each tool replays: from the start of the backup it restores to the target
PITR_BACKUP_START=$("$BIN/basebackup" --repo "$W/pitr-repo" list --json | tail -1 | sed -n 's/.*"start_lsn": *"\([^"]*\)".*/\1/p')
PGBR_BACKUP_START=$(pgbr --output=json info | tr -d ' \n' | grep -o '"start":"[0-9A-F]*/[0-9A-F]*"' | tail -1 | cut -d'"' -f4)
lsn_num() { echo $((16#${1%/*} * 4294967296 + 16#${1#*/})); }
lsn_mb() { # lsn_mb FROM TO -> MB of WAL between two LSNs
  [ -n "$1" ] && [ -n "$2" ] || { echo "?"; return; }
  awk -v a="$(lsn_num "$1")" -v b="$(lsn_num "$2")" 'BEGIN { printf "%.0f", (b - a) / 1e6 }'
}
REPLAY_PITR=$(lsn_mb "$PITR_BACKUP_START" "$TARGET_LSN")
REPLAY_PGBR=$(lsn_mb "$PGBR_BACKUP_START" "$TARGET_LSN")
log "PITR target '$TARGET' (LSN $TARGET_LSN); WAL from backup start to target: pitr $REPLAY_PITR MB, pgBackRest $REPLAY_PGBR MB"

P=$W/pitr
redo_s() { grep -o 'redo done at .*elapsed: [0-9.]* s' "$1" 2>/dev/null | sed 's/.*elapsed: \([0-9.]*\) s/\1/' | tail -1; }
for run in $(seq 1 "$RUNS"); do
  for t in $(rotate "pitr pgbackrest" "$run"); do
    rm -rf "$P" "$W/pgbr/spool/archive"
    [ "$t" = pitr ] || mkdir -m 700 "$P"
    quiesce
    STARTED+=("$P")
    record rto "$t" "$run" load "$(load1)"
    t0=$(now)
    case $t in
      pitr)
        timed "rto.$t.$run" "$BIN/pitr-restore" --repo "$W/pitr-repo" --pgdata "$P" --target-time "$TARGET" --start \
          --set archive_mode=off --set port="$RPORT"
        rto=$(elapsed "$t0")
        files=$(grep -o 'restored backup .* in [0-9.]* s' "$W/log/rto.$t.$run.out" | sed 's/.* in \([0-9.]*\) s$/\1/')
        own=$(grep -o 'total time [0-9.]* s' "$W/log/rto.$t.$run.out" | grep -o '[0-9.]*')
        srvlog=$P/pitr-restore-server.log ;;
      pgbackrest)
        timed "rto.$t.$run" pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$P" --type=time --target="$TARGET" \
          --target-action=promote restore
        files=$(elapsed "$t0")
        pg_conf "$P" "port = $RPORT" "archive_mode = off"
        srvlog=$W/log/rto.$t.$run.server.log
        pg_ctl -D "$P" -l "$srvlog" -w -t 1200 start >/dev/null || die "pgBackRest PITR: server did not start (see $srvlog)"
        deadline=$(($(date +%s) + 1200))
        until [ "$(psql -X -p "$RPORT" -Atqc 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
          [ "$(date +%s)" -lt "$deadline" ] || die "pgBackRest PITR: not promoted after 1200 s"
          sleep 0.1
        done
        rto=$(elapsed "$t0")
        own=$rto ;;
    esac
    got=$(psqlq "$RPORT" "select coalesce(string_agg(note, ',' order by id), '') from pitr_marker")
    redo=$(redo_s "$srvlog")
    ok=0; [ "$got" = before ] && ok=1
    record rto "$t" "$run" seconds "$rto"
    record rto "$t" "$run" own_seconds "$own"
    record rto "$t" "$run" files_seconds "$files"
    record rto "$t" "$run" redo_seconds "${redo:-nan}"
    record rto "$t" "$run" correct "$ok"
    record rto "$t" "$run" rss_mib "$RSS_MIB"
    log "RTO run $run $t: $rto s (files $files s, redo ${redo:-?} s), markers '$got'"
    [ "$ok" = 1 ] || log "WARNING: $t recovered to the wrong point: markers '$got', expected 'before'"
    pg_stop "$P"
  done
done
rm -rf "$P"

# ---------------------------------------------------------------- report
# stat PHASE TOOL METRIC -> "median min max" over the runs
stat() {
  awk -F'\t' -v p="$1" -v t="$2" -v m="$3" '$1 == p && $2 == t && $4 == m && $5 != "nan" { print $5 }' "$TSV" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan nan"; exit }
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print med, v[1], v[NR] }'
}
med() { local a; read -r a _ _ <<< "$(stat "$@")"; echo "$a"; }
maxof() { local c; read -r _ _ c <<< "$(stat "$@")"; echo "$c"; }
loads() { local a b; read -r _ a b <<< "$(stat "$1" "$2" load)"; echo "$a–$b"; }
secs() { # PHASE TOOL [METRIC] -> "**med** (min–max)"
  local a b c; read -r a b c <<< "$(stat "$1" "$2" "${3:-seconds}")"
  awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN{printf "**%.2f** (%.2f–%.2f)", a, b, c}'
}
f1() { awk -v x="$1" 'BEGIN{ if (x == "nan" || x == "") print "–"; else printf "%.1f", x }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }
PGBR_V=$(pgbackrest version | awk '{print $2}')
desc() {
  case $1.$2 in
    backup.pitr) echo "basebackup create (zstd 3, 2 threads, 16 MiB chunks, 6 uploads)" ;;
    backup.pitr-enc) echo "the same, client-side encrypted (--encryption-key-file)" ;;
    backup.pgbasebackup) echo "pg_basebackup -Ft -X none -c fast --compress=server-zstd:3" ;;
    backup.pgbackrest) echo "pgBackRest $PGBR_V backup --type=full, zst:3, process-max 2" ;;
    restore.pitr) echo "pitr-restore --target immediate (jobs 4, syncfs)" ;;
    restore.pitr-enc) echo "the same from the encrypted repository" ;;
    restore.pgbackrest) echo "pgBackRest restore, process-max 2" ;;
    restore.dd) echo "dd if=/dev/zero bs=1M conv=fsync (disk floor)" ;;
    restore.dd-direct) echo "dd if=/dev/zero bs=16M oflag=direct conv=fsync (the disk without the page cache)" ;;
    rto.pitr) echo "pitr-restore --target-time T --start (wal-archiver get, prefetch 8)" ;;
    rto.pgbackrest) echo "pgBackRest restore --type=time + pg_ctl start (archive-async, process-max 2)" ;;
  esac
}
b_pitr=$(med backup pitr seconds) b_pgbb=$(med backup pgbasebackup seconds) b_pgbr=$(med backup pgbackrest seconds)
r_pitr=$(med restore pitr seconds) r_pgbr=$(med restore pgbackrest seconds) r_dd=$(med restore dd seconds)
b_enc=$(med backup pitr-enc seconds) r_enc=$(med restore pitr-enc seconds)
rb_pitr=$(med restore pitr bytes) rb_dd=$(med restore dd bytes)
r_ddd=$(med restore dd-direct seconds) rb_ddd=$(med restore dd-direct bytes)
x_pitr=$(med rto pitr seconds) x_pgbr=$(med rto pgbackrest seconds)
x_pgbr_best=$(stat rto pgbackrest seconds | cut -d' ' -f2)
m_pitr=$(printf '%s\n' "$(maxof backup pitr rss_mib)" "$(maxof restore pitr rss_mib)" "$(maxof rto pitr rss_mib)" | sort -g | tail -1)
verdict() { if awk "BEGIN{exit !($1)}"; then echo "**holds**"; else echo "**does not hold**"; fi; }
{
  echo "## Backup / restore / PITR run of $DATE_START: pgbench scale $SCALE ($DB_MB MB), $RUNS runs"
  echo
  echo "Produced by \`benches/compare-backup-restore.sh\` (see \`benches/README.md\`)."
  echo
  echo "- Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Debian $(cat /etc/debian_version), kernel $(uname -r); scratch $BENCH_TMP on $(df -T "$BENCH_TMP" | awk 'NR==2{print $2 " (" $1 ")"}')."
  echo "- Load average (1/5/15 min): $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end ($(date -u +%FT%TZ)); the last column of each table is the 1-min load when the tool's runs started. The machine is shared: compare tools within this run only."
  echo "- Database: \`pgbench -i -s $SCALE\`, $DB_MB MB (sum of pg_database_size), data directory without pg_wal $((DATA_BYTES / 1000000)) MB; $("$PGBIN/postgres" --version); shared_buffers 256MB, max_wal_size 1GB, synchronous_commit off."
  echo "- pitr: $PITR_REV. pgBackRest $PGBR_V. Median (min–max) of $RUNS runs, tools interleaved (order rotated per run). Max RSS = GNU time %M of the tool's command (largest single process of its tree, PostgreSQL itself excluded)."
  echo "- WAL archiving: one archive_command for both repositories, \`wal-archiver push\` then \`pgbackrest archive-push\` (async, process-max 2). Every backup waits for its last WAL segment through this same command."
  echo
  echo "### Backup (full, fast checkpoint, into a local repository on the same disk)"
  echo
  echo "| tool | command | seconds | MB/s | stored MB (ratio) | max RSS MiB | CPU s | load 1m |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for t in pitr pitr-enc pgbasebackup pgbackrest; do
    s=$(med backup "$t" seconds); st=$(med backup "$t" stored_bytes)
    echo "| $t | $(desc backup "$t") | $(secs backup "$t") | $(mbps "$DB_BYTES" "$s") | $(awk -v b="$st" -v d="$DB_BYTES" 'BEGIN{printf "%.0f (%.1fx)", b/1e6, d/b}') | $(f1 "$(maxof backup "$t" rss_mib)") | $(f1 "$(med backup "$t" cpu_s)") | $(loads backup "$t") |"
  done
  echo
  echo "pg_basebackup's CPU and RSS are the client's only: the server (walsender) compresses."
  echo
  echo "### Restore of the newest backup into an empty directory, until durable (syncfs after the tool)"
  echo
  echo "| tool | command | seconds (tool part) | MB/s | MB written | max RSS MiB | CPU s | load 1m |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for t in pitr pitr-enc pgbackrest dd dd-direct; do
    s=$(med restore "$t" seconds); b=$(med restore "$t" bytes)
    echo "| $t | $(desc restore "$t") | $(secs restore "$t") ($(f1 "$(med restore "$t" tool_seconds)")) | $(mbps "$b" "$s") | $(awk -v b="$b" 'BEGIN{printf "%.0f", b/1e6}') | $(f1 "$(maxof restore "$t" rss_mib)") | $(f1 "$(med restore "$t" cpu_s)") | $(loads restore "$t") |"
  done
  echo
  echo "### Time to a PITR target (RTO): restore + recovery to T + promotion"
  echo
  echo "Workload after the backups: pgbench -c 2 -j 2 until $PITR_WAL_MB MB of WAL, marker 'before', T = 1 s later ($TARGET, LSN $TARGET_LSN), marker 'after' 1 s later, $PITR_TAIL_MB MB more. WAL from the restored backup's start to T: pitr $REPLAY_PITR MB, pgBackRest $REPLAY_PGBR MB."
  echo
  echo "| tool | command | RTO seconds | files s / redo s | tool's own figure s | correct | max RSS MiB | load 1m |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for t in pitr pgbackrest; do
    c=$(awk -F'\t' -v t="$t" '$1 == "rto" && $2 == t && $4 == "correct" { n++; s += $5 } END { printf "%d/%d", s, n }' "$TSV")
    echo "| $t | $(desc rto "$t") | $(secs rto "$t") | $(f1 "$(med rto "$t" files_seconds)") / $(f1 "$(med rto "$t" redo_seconds)") | $(f1 "$(med rto "$t" own_seconds)") | $c | $(f1 "$(maxof rto "$t" rss_mib)") | $(loads rto "$t") |"
  done
  echo
  echo "files = until the restore tool exited (pitr: its own \"restored … in\" figure); redo = the server's \"redo done … elapsed\"; the rest is start-up, end of recovery and promotion. pitr's own figure is the \"total time\" it prints (its wait loop and the script's for pgBackRest both poll every 0.1 s)."
  echo
  echo "### Acceptance (issue 3), medians of this run"
  echo
  echo "- backup ≤ pg_basebackup server-zstd: $(f1 "$b_pitr") s vs $(f1 "$b_pgbb") s = $(awk -v a="$b_pitr" -v b="$b_pgbb" 'BEGIN{printf "%.2f", a/b}')× its time → $(verdict "$b_pitr <= $b_pgbb")"
  echo "- backup ≤ pgBackRest process-max 2: $(f1 "$b_pitr") s vs $(f1 "$b_pgbr") s = $(awk -v a="$b_pitr" -v b="$b_pgbr" 'BEGIN{printf "%.2f", a/b}')× → $(verdict "$b_pitr <= $b_pgbr")"
  echo "- restore ≤ pgBackRest process-max 2: $(f1 "$r_pitr") s vs $(f1 "$r_pgbr") s = $(awk -v a="$r_pitr" -v b="$r_pgbr" 'BEGIN{printf "%.2f", a/b}')× → $(verdict "$r_pitr <= $r_pgbr")"
  echo "- restore within 1.2× of the disk with fsync: pitr $(mbps "$rb_pitr" "$r_pitr") MB/s vs dd $(mbps "$rb_dd" "$r_dd") MB/s: $(awk -v a="$rb_pitr" -v s="$r_pitr" -v b="$rb_dd" -v d="$r_dd" 'BEGIN{printf "%.2f", (b/d)/(a/s)}')× the floor's time per byte → $(verdict "($rb_dd/$r_dd) <= 1.2*($rb_pitr/$r_pitr)") (vs dd oflag=direct $(mbps "$rb_ddd" "$r_ddd") MB/s: $(awk -v a="$rb_pitr" -v s="$r_pitr" -v b="$rb_ddd" -v d="$r_ddd" 'BEGIN{printf "%.2f", (b/d)/(a/s)}')×)"
  echo "- RTO ≤ 0.9× pgBackRest's best: $(f1 "$x_pitr") s vs $(f1 "$x_pgbr_best") s (its median $(f1 "$x_pgbr") s) = $(awk -v a="$x_pitr" -v b="$x_pgbr_best" 'BEGIN{printf "%.2f", a/b}')× → $(verdict "$x_pitr <= 0.9*$x_pgbr_best")"
  echo "- peak memory < 256 MiB (basebackup create, pitr-restore, pitr-restore --start): max $(f1 "$m_pitr") MiB → $(verdict "$m_pitr < 256")"
  echo
  echo "### Client-side encryption (issue 16): at most 10 % slower, medians of this run"
  echo
  echo "- backup: $(f1 "$b_pitr") s plain vs $(f1 "$b_enc") s encrypted = $(awk -v a="$b_enc" -v b="$b_pitr" 'BEGIN{printf "%+.1f%%", 100*(a/b-1)}') → $(verdict "$b_enc <= 1.10*$b_pitr")"
  echo "- restore: $(f1 "$r_pitr") s plain vs $(f1 "$r_enc") s encrypted = $(awk -v a="$r_enc" -v b="$r_pitr" 'BEGIN{printf "%+.1f%%", 100*(a/b-1)}') → $(verdict "$r_enc <= 1.10*$r_pitr")"
  echo
  echo "<details><summary>commands (\$W = the work directory)</summary>"
  echo
  echo "- archive_command: \`$(echo "$ACMD" | sed "s#$W#\$W#g; s#$BIN/##g")\`"
  echo "- pgBackRest configuration: $(grep -vE '^(\[|$)|-path=' "$PGBR_CONF" | grep -E 'compress|process|async|start-fast' | tr '\n' ' ')"
  echo "- backup: \`basebackup --repo \$W/pitr-repo --dbname 'host=… port=…' create\`; \`pg_basebackup -D \$W/pgbb/N -Ft -X none -c fast --compress=server-zstd:3\`; \`pgbackrest --stanza=bench --type=full backup\`"
  echo "- restore: \`pitr-restore --repo \$W/pitr-repo --pgdata \$W/restore --target immediate\`; \`pgbackrest --stanza=bench --pg1-path=\$W/restore restore\`; \`dd if=/dev/zero of=\$W/dd.bin bs=1M count=$((DATA_BYTES / 1048576)) conv=fsync\`; \`dd ... bs=16M oflag=direct conv=fsync\`; each followed by \`sync -f \$W/restore\`"
  echo "- RTO: \`pitr-restore --repo \$W/pitr-repo --pgdata \$W/pitr --target-time '$TARGET' --start --set archive_mode=off --set port=$RPORT\`; \`pgbackrest --stanza=bench --pg1-path=\$W/pitr --type=time --target='$TARGET' --target-action=promote restore\` + \`pg_ctl start -w\` + poll \`pg_is_in_recovery()\`"
  echo
  echo "</details>"
} > "$BENCH_TMP/report.md"
log "done"
