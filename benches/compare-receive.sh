#!/usr/bin/env bash
# compare-receive.sh — the streaming receiver (`wal-archiver receive`) next to pg_receivewal on
# one throwaway PostgreSQL 15 cluster: does it keep up with the fastest WAL pgbench makes here,
# what does that cost, and what does it add to commit latency as a synchronous standby.
#
#  1. Keeping up. Cluster: initdb in the scratch directory, a free TCP port on 127.0.0.1,
#     wal_level=replica, max_wal_senders=10, synchronous_commit=off, shared_buffers=256MB,
#     max_wal_size=1GB, checkpoint_timeout=1min, full_page_writes=on, wal_compression=off (as
#     make-wal-corpus.sh). Two streaming clients run side by side on the same stream:
#       pitr           wal-archiver receive --repo $W/repo --spool $W/spool --metrics-listen
#                      127.0.0.1:0 (defaults: --partial-interval 1, durability spool;
#                      application_name pitr)
#       pg_receivewal  pg_receivewal -D $W/prw --synchronous (fsync after every write, like the
#                      receiver; PRW_SYNC=0 drops it), application_name pg_receivewal
#     Load: `pgbench -i -s $LOAD_SCALE` (bulk COPY + index builds: the fastest WAL pgbench
#     makes), then `pgbench -n -c $LOAD_CLIENTS -j 2 -T $LOAD_SECONDS` (TPC-B-like), then up
#     to $DRAIN_MAX s for both clients to catch up with the LSN at which the load ended.
#     A sampler (python3, one persistent psql) records every $SAMPLE_INTERVAL s:
#     pg_current_wal_lsn(); pg_stat_replication's write/flush LSN and write_lag/flush_lag of
#     both clients; the receiver's /metrics (pitr_receive_{received,flushed,uploaded,
#     server_wal_end}_lsn, flush/upload_lag_bytes, upload_lag_seconds); each client's CPU
#     (utime+stime of /proc/PID/stat, all threads) and VmHWM. Lag bytes are measured against
#     the sampled pg_current_wal_lsn() (not the receiver's own view of the server's end);
#     "behind s" = now - the time at which the server's LSN first passed the client's flushed
#     LSN (a time lag with the sampling resolution, the same definition for both clients).
#     Peak and median are over the samples taken while pgbench ran. CPU per GB = CPU used from
#     the start of the load until both caught up (or the drain limit), per GB of WAL the
#     server generated in that time.
#  2. Commit latency as the synchronous standby: synchronous_commit=on, and a one-row INSERT
#     (bigserial primary key) with `pgbench -n -c C -j min(C,2) -T $SYNC_SECONDS -l`, for each
#     C in $SYNC_CLIENTS and each configuration in $SYNC_CONFIGS:
#       none             synchronous_standby_names = '' (local fsync only: the baseline)
#       pg_receivewal    pg_receivewal --synchronous, synchronous_standby_names='pg_receivewal'
#       pitr-spool       wal-archiver receive --synchronous-durability spool, s_s_n = 'pitr'
#       pitr-repository  wal-archiver receive --synchronous-durability repository (a local
#                        directory repository), s_s_n = 'pitr'
#     $SYNC_ROUNDS rounds, even rounds in reverse order (no configuration always runs first).
#     The pgbench tables of part 1 are dropped first (no autovacuum of them meanwhile). Each
#     standby starts on an empty directory / repository each round (so it starts at the
#     server's current position) and must show sync_state = 'sync' in pg_stat_replication
#     before the run; CHECKPOINT before each run. TPS is pgbench's (without initial connection
#     time), mean (min-max) of the rounds; average, p50 and p99 latency come from the
#     per-transaction logs (-l) of all rounds together.
#
# Started as root it builds the release binary (cargo build --release -p wal-archiver, unless
# NO_BUILD=1), copies it to the scratch directory (so that concurrent rebuilds cannot change
# it mid-run) and measures as the `postgres` OS user (refuses to run as root without it).
# The whole run takes about 7 minutes with the defaults. Results: a markdown section appended
# to benches/RESULTS.md (RESULTS_MD); raw samples in $BENCH_TMP/samples.tsv and logs in
# $BENCH_TMP (kept with BENCH_KEEP=1; the cluster is always stopped).
# Knobs: BENCH_TMP (default /tmp/pitr-bench/receive), PGBIN (/usr/lib/postgresql/15/bin),
# LOAD_SCALE (50), LOAD_CLIENTS (4), LOAD_SECONDS (30), DRAIN_MAX (60), SAMPLE_INTERVAL
# (0.25), PRW_SYNC (1), SYNC_SECONDS (15), SYNC_CLIENTS ("1 4"), SYNC_ROUNDS (2), SYNC_CONFIGS ("none
# pg_receivewal pitr-spool pitr-repository"), SKIP_PART1=1, SKIP_PART2=1, RESULTS_MD,
# BENCH_KEEP=1, NO_BUILD=1, BENCH_LIMIT (s, default 1500).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export BENCH_TMP=${BENCH_TMP:-/tmp/pitr-bench/receive}
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export LOAD_SCALE=${LOAD_SCALE:-50} LOAD_CLIENTS=${LOAD_CLIENTS:-4} LOAD_SECONDS=${LOAD_SECONDS:-30}
export DRAIN_MAX=${DRAIN_MAX:-60} SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.25} PRW_SYNC=${PRW_SYNC:-1}
export SYNC_SECONDS=${SYNC_SECONDS:-15} SYNC_CLIENTS=${SYNC_CLIENTS:-"1 4"} SYNC_ROUNDS=${SYNC_ROUNDS:-2}
export SYNC_CONFIGS=${SYNC_CONFIGS:-"none pg_receivewal pitr-spool pitr-repository"}
export SKIP_PART1=${SKIP_PART1:-} SKIP_PART2=${SKIP_PART2:-} BENCH_KEEP=${BENCH_KEEP:-}
RESULTS_MD=${RESULTS_MD:-$HERE/RESULTS.md}
export LC_ALL=C
log() { echo "[$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- outer: setup and report
if [ -z "${PITR_BENCH_INNER:-}" ]; then
  [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/pg_receivewal" ] || die "PostgreSQL binaries not found in $PGBIN"
  command -v python3 >/dev/null || die "python3 is needed"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user (PostgreSQL refuses to run as root)"
  fi
  if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p wal-archiver"
    (cd "$ROOT" && cargo build --release -p wal-archiver)
  fi
  rm -rf "$BENCH_TMP"
  mkdir -p "$BENCH_TMP/bin"
  cp "$ROOT/target/release/wal-archiver" "$BENCH_TMP/bin/wal-archiver"
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- common wal-archiver 2>/dev/null || rev="$rev + uncommitted changes"
  export PITR_REV="$rev, built $(date -u -r "$ROOT/target/release/wal-archiver" +%FT%TZ)${NO_BUILD:+ (NO_BUILD=1: the revision is HEAD at run time, the binary may be older)}"
  rc=0
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$BENCH_TMP"
    runuser -u postgres -- env PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-1500}" bash "$HERE/compare-receive.sh" || rc=$?
  else
    PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-1500}" bash "$HERE/compare-receive.sh" || rc=$?
  fi
  [ "$rc" = 0 ] && [ -s "$BENCH_TMP/report.md" ] || die "the measurement failed (exit $rc); logs in $BENCH_TMP"
  if [ ! -f "$RESULTS_MD" ]; then
    printf '%s\n\n%s\n' "# pitr benchmark results" "Appended by the scripts in \`benches/\` (see \`benches/README.md\`); newest run last." > "$RESULTS_MD"
  fi
  { echo; cat "$BENCH_TMP/report.md"; } >> "$RESULTS_MD"
  cat "$BENCH_TMP/report.md"
  log "appended to $RESULTS_MD"
  exit 0
fi

# ---------------------------------------------------------------- inner: measurements
export PATH=$PGBIN:$PATH
BIN=$BENCH_TMP/bin/wal-archiver
W=$BENCH_TMP
D=$W/pgdata
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CONN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -f "$D/postmaster.pid" ] && pg_ctl -D "$D" -m immediate -w stop >/dev/null 2>&1
  if [ -z "$BENCH_KEEP" ]; then # the data; logs, samples and report.md stay
    rm -rf "$D"
    for p in "$W"/prw-* "$W"/repo-* "$W"/spool-* "$W"/lat; do [ ! -d "$p" ] || rm -rf "$p"; done
  fi
}
trap 'exit 130' INT TERM HUP
trap cleanup EXIT
q() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
stop_pid() { # PID: SIGTERM, wait up to 30 s, then SIGKILL
  local p=$1 i
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
# wait_standby APP [sync]: until APP streams (and, with "sync", is the synchronous standby)
wait_standby() {
  local i want="state = 'streaming'"
  [ "${2:-}" = sync ] && want="$want and sync_state = 'sync'"
  for i in $(seq 1 300); do
    [ "$(q "select count(*) from pg_stat_replication where application_name = '$1' and $want")" = 1 ] && return 0
    sleep 0.1
  done
  q "select application_name, state, sync_state from pg_stat_replication" >&2
  die "$1 is not streaming${2:+ as the synchronous standby} after 30 s"
}
# start_pitr NAME EXTRA_ARGS...: a receiver with its own repository and spool; sets RPID
start_pitr() {
  local n=$1
  shift
  mkdir -p "$W/repo-$n" "$W/spool-$n"
  PITR_LOG=info "$BIN" --repo "$W/repo-$n" receive -d "$CONN" --spool "$W/spool-$n" "$@" 2> "$W/receive-$n.log" &
  RPID=$!
  PIDS+=("$RPID")
}
start_prw() { # NAME: pg_receivewal into its own directory; sets WPID
  local sync=--synchronous
  [ "$PRW_SYNC" = 1 ] || sync=
  mkdir -p "$W/prw-$1"
  pg_receivewal -D "$W/prw-$1" -d "$CONN application_name=pg_receivewal" $sync -n --no-password 2> "$W/prw-$1.log" &
  WPID=$!
  PIDS+=("$WPID")
}
log_problems() { # LOG: the number of WARN/ERROR lines, and the first three
  local n
  local re='^ *(WARN|ERROR)|error:|warning:|fatal|panic'
  n=$(grep -ciE "$re" "$1" || true)
  echo "$n"
  [ "$n" = 0 ] || grep -iE "$re" "$1" | head -3 | sed 's/^/    /' >&2
}

# ---- the cluster
initdb -D "$D" -U postgres -A trust --no-sync -E UTF8 > "$W/initdb.log"
cat >> "$D/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
shared_buffers = 256MB
max_wal_size = 1GB
wal_level = replica
max_wal_senders = 10
wal_compression = off
full_page_writes = on
checkpoint_timeout = 1min
synchronous_commit = off
wal_sender_timeout = 60s
CONF
pg_ctl -D "$D" -l "$W/server.log" -w start > /dev/null
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_START=$(date -u +%FT%TZ)
log "PostgreSQL on port $PORT; scratch $W"

# The sampler (mode "sample") and the analysis of part 1 (mode "report").
cat > "$W/sampler.py" <<'PY'
import os, subprocess, sys, time, urllib.request
W = os.environ["BENCH_TMP"]
CLK = os.sysconf("SC_CLK_TCK")
COLS = ("t phase server_lsn pitr_write pitr_flush pitr_write_lag pitr_flush_lag prw_write prw_flush "
        "prw_write_lag prw_flush_lag m_received m_flushed m_uploaded m_server_end m_flush_lag_bytes "
        "m_upload_lag_bytes m_upload_lag_s pitr_cpu prw_cpu pitr_hwm_kb prw_hwm_kb").split()
NAN = float("nan")

def proc(pid):
    """(user+sys seconds, VmHWM KiB) of a process (all its threads), or NaNs."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
        f = stat[stat.rindex(")") + 2:].split()
        cpu = (int(f[11]) + int(f[12])) / CLK
        hwm = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))
        return cpu, hwm
    except (OSError, ValueError, StopIteration):
        return NAN, NAN

def sample(url, rpid, wpid, interval, out):
    sql = ("select (pg_current_wal_lsn() - '0/0')::bigint, " + ", ".join(
        f"coalesce((select concat_ws(' ', (write_lsn - '0/0')::bigint, (flush_lsn - '0/0')::bigint, "
        f"coalesce(extract(epoch from write_lag), 0), coalesce(extract(epoch from flush_lag), 0)) "
        f"from pg_stat_replication where application_name = '{a}' limit 1), 'nan nan nan nan')"
        for a in ("pitr", "pg_receivewal")) + ";\n")
    psql = subprocess.Popen(["stdbuf", "-oL", "psql", "-XAtq", "-F", " "], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    names = ("pitr_receive_received_lsn pitr_receive_flushed_lsn pitr_receive_uploaded_lsn "
             "pitr_receive_server_wal_end_lsn pitr_receive_flush_lag_bytes "
             "pitr_receive_upload_lag_bytes pitr_receive_upload_lag_seconds").split()
    with open(out, "w") as o:
        o.write("\t".join(COLS) + "\n")
        nxt = time.time()
        while not os.path.exists(f"{W}/sampler.stop"):
            now = time.time()
            try:
                phase = open(f"{W}/phase").read().strip()
            except OSError:
                phase = "-"
            psql.stdin.write(sql)
            pg = psql.stdout.readline().split()
            m = {}
            try:
                for line in urllib.request.urlopen(url, timeout=1).read().decode().splitlines():
                    if line and not line.startswith("#"):
                        k, v = line.rsplit(" ", 1)
                        m[k] = float(v)
            except Exception:
                pass
            pc, ph = proc(rpid)
            wc, wh = proc(wpid)
            row = [f"{now:.3f}", phase] + pg + [m.get(n, NAN) for n in names] + [pc, wc, ph, wh]
            o.write("\t".join(str(x) for x in row) + "\n")
            o.flush()
            nxt += interval
            time.sleep(max(0.0, nxt - time.time()))
    psql.stdin.close()
    psql.wait()

def report(samples, events):
    rows = []
    with open(samples) as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            v = line.rstrip("\n").split("\t")
            if len(v) != len(head):
                continue
            r = {k: (x if k == "phase" else float(x)) for k, x in zip(head, v)}
            rows.append(r)
    ev = {}
    for line in open(events):
        name, t, lsn = line.split()
        ev[name] = (float(t), int(lsn))
    t_init, l_init = ev["init"]
    t_run, l_run = ev["run"]
    t_end, l_end = ev["end"]
    t_done, _ = ev["drained"]

    def med(xs):
        xs = sorted(x for x in xs if x == x)
        if not xs:
            return NAN
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    def peak(xs):
        xs = [x for x in xs if x == x]
        return max(xs) if xs else NAN

    def behind(flushcol):
        """per sample: seconds since the server's LSN first reached the client's flushed LSN
        (linear between two samples of the server's LSN)"""
        out = []
        for i, r in enumerate(rows):
            f = r[flushcol]
            if f != f:
                out.append(NAN)
                continue
            if f >= r["server_lsn"]:
                out.append(0.0)
                continue
            k = next((j for j in range(i + 1) if rows[j]["server_lsn"] >= f), None)
            if k is None:
                out.append(NAN)
                continue
            a, b = rows[k - 1] if k > 0 else rows[k], rows[k]
            reach = b["t"]  # interpolated: when the server's LSN passed f
            if b["server_lsn"] > a["server_lsn"]:
                reach = a["t"] + (f - a["server_lsn"]) / (b["server_lsn"] - a["server_lsn"]) * (b["t"] - a["t"])
            out.append(max(0.0, r["t"] - reach))
        return out

    b_pitr, b_prw = behind("m_flushed"), behind("prw_flush")
    b_up = behind("m_uploaded")
    load = [i for i, r in enumerate(rows) if t_init <= r["t"] <= t_end]
    mb = lambda x: x / 1e6

    def caught(col):
        for r in rows:
            if r["t"] >= t_end and r[col] == r[col] and r[col] >= l_end:
                return r["t"] - t_end
        return None

    def cpu_hwm(cpucol, hwmcol, upto):
        a = next((r for r in rows if r["t"] >= t_init and r[cpucol] == r[cpucol]), None)
        b = None
        for r in rows:
            if r["t"] <= upto and r[cpucol] == r[cpucol]:
                b = r
        if a is None or b is None:
            return NAN, NAN, NAN
        gb = (b["server_lsn"] - a["server_lsn"]) / 1e9
        return b[cpucol] - a[cpucol], (b[cpucol] - a[cpucol]) / gb if gb > 0 else NAN, peak(r[hwmcol] for r in rows) / 1024

    c_pitr_f, c_pitr_u, c_prw = caught("m_flushed"), caught("m_uploaded"), caught("prw_flush")
    upto = t_end + max([c for c in (c_pitr_f, c_pitr_u, c_prw) if c is not None] + [0]) + 0.5
    if None in (c_pitr_f, c_pitr_u, c_prw):
        upto = t_done
    p_cpu, p_gb, p_hwm = cpu_hwm("pitr_cpu", "pitr_hwm_kb", upto)
    w_cpu, w_gb, w_hwm = cpu_hwm("prw_cpu", "prw_hwm_kb", upto)
    fmt_c = lambda c: f"{c:.1f} s" if c is not None else f"**no** (not within {t_done - t_end:.0f} s)"
    sel = lambda col: [rows[i][col] for i in load]
    selb = lambda b: [b[i] for i in load]
    lag = lambda flushcol: [rows[i]["server_lsn"] - rows[i][flushcol] for i in load]
    print(f"- WAL generated: `pgbench -i` {mb(l_run - l_init):.0f} MB in {t_run - t_init:.1f} s = "
          f"**{mb(l_run - l_init) / (t_run - t_init):.1f} MB/s**; TPC-B {mb(l_end - l_run):.0f} MB in "
          f"{t_end - t_run:.1f} s = **{mb(l_end - l_run) / (t_end - t_run):.1f} MB/s**; overall "
          f"{mb(l_end - l_init) / (t_end - t_init):.1f} MB/s ({len(load)} samples during the load).")
    print()
    print("| while pgbench ran | peak | median |")
    print("|---|---:|---:|")
    def line(label, xs, unit, scale=1.0, nd=1):
        print(f"| {label} | {peak(xs) * scale:.{nd}f} {unit} | {med(xs) * scale:.{nd}f} {unit} |")
    line("pitr flush lag (server LSN − `pitr_receive_flushed_lsn`)", lag("m_flushed"), "MB", 1e-6, 2)
    line("pitr upload lag (server LSN − `pitr_receive_uploaded_lsn`)", lag("m_uploaded"), "MB", 1e-6, 2)
    line("pitr `pitr_receive_flush_lag_bytes` (vs the receiver's last walEnd)", sel("m_flush_lag_bytes"), "MB", 1e-6, 2)
    line("pitr `pitr_receive_upload_lag_bytes`", sel("m_upload_lag_bytes"), "MB", 1e-6, 2)
    line("pitr `pitr_receive_upload_lag_seconds`", sel("m_upload_lag_s"), "s", 1, 2)
    line("pitr flush behind (time lag)", selb(b_pitr), "s", 1, 2)
    line("pitr upload behind (time lag)", selb(b_up), "s", 1, 2)
    line("pitr pg_stat_replication write_lag", sel("pitr_write_lag"), "s", 1, 3)
    line("pitr pg_stat_replication flush_lag", sel("pitr_flush_lag"), "s", 1, 3)
    line("pg_receivewal flush lag (server LSN − flush_lsn)", lag("prw_flush"), "MB", 1e-6, 2)
    line("pg_receivewal flush behind (time lag)", selb(b_prw), "s", 1, 2)
    line("pg_receivewal pg_stat_replication write_lag", sel("prw_write_lag"), "s", 1, 3)
    line("pg_receivewal pg_stat_replication flush_lag", sel("prw_flush_lag"), "s", 1, 3)
    print()
    print(f"- Caught up with the LSN at which the load ended ({l_end >> 32:X}/{l_end & 0xFFFFFFFF:X}), "
          f"after the end of the load: pitr flushed {fmt_c(c_pitr_f)}, pitr uploaded {fmt_c(c_pitr_u)}, "
          f"pg_receivewal flushed {fmt_c(c_prw)}.")
    print(f"- CPU (user+sys, all threads) from the start of the load until caught up: pitr "
          f"{p_cpu:.1f} s = **{p_gb:.1f} s/GB** of WAL, peak RSS (VmHWM) **{p_hwm:.1f} MiB**; "
          f"pg_receivewal {w_cpu:.1f} s = **{w_gb:.1f} s/GB**, VmHWM **{w_hwm:.1f} MiB**.")

if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6])
    else:
        report(sys.argv[2], sys.argv[3])
PY

event() { echo "$1 $(date +%s.%N) $(q "select (pg_current_wal_lsn() - '0/0')::bigint")" >> "$W/events"; }
P1="" P2=""

# ---------------------------------------------------------------- part 1: keeping up
if [ -z "$SKIP_PART1" ]; then
  log "part 1: pitr receive + pg_receivewal, pgbench -i -s $LOAD_SCALE then -c $LOAD_CLIENTS -T $LOAD_SECONDS"
  start_pitr keep --metrics-listen 127.0.0.1:0
  PITR1=$RPID
  start_prw keep
  PRW1=$WPID
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -oE 'serving http://[0-9.]+:[0-9]+/metrics' "$W/receive-keep.log" | head -1 | cut -d' ' -f2) || true
    [ -n "$url" ] && break
    kill -0 "$PITR1" 2>/dev/null || { cat "$W/receive-keep.log" >&2; die "the receiver exited"; }
    sleep 0.1
  done
  [ -n "$url" ] || die "no metrics address in $W/receive-keep.log"
  wait_standby pitr
  wait_standby pg_receivewal
  echo idle > "$W/phase"
  : > "$W/events"
  python3 "$W/sampler.py" sample "$url" "$PITR1" "$PRW1" "$SAMPLE_INTERVAL" "$W/samples.tsv" &
  SPID=$!
  PIDS+=("$SPID")
  sleep 2
  L1=$(cut -d' ' -f1 /proc/loadavg)
  event init
  echo init > "$W/phase"
  pgbench -i -s "$LOAD_SCALE" -q > "$W/pgbench-init.log" 2>&1 || { cat "$W/pgbench-init.log" >&2; die "pgbench -i failed"; }
  event run
  echo run > "$W/phase"
  pgbench -n -c "$LOAD_CLIENTS" -j 2 -T "$LOAD_SECONDS" > "$W/pgbench-run.log" 2>&1 || { cat "$W/pgbench-run.log" >&2; die "pgbench failed"; }
  event end
  echo drain > "$W/phase"
  END=$(tail -1 "$W/events" | cut -d' ' -f3)
  TPS1=$(grep -oE 'tps = [0-9]+' "$W/pgbench-run.log" | grep -oE '[0-9]+' || echo '?')
  log "load done at LSN byte $END (TPC-B $TPS1 tps); waiting up to $DRAIN_MAX s for the clients"
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$DRAIN_MAX" ]; do
    m=$(curl -s --max-time 2 "$url" | awk '$1 == "pitr_receive_flushed_lsn" { f = $2 } $1 == "pitr_receive_uploaded_lsn" { u = $2 } END { printf "%.0f %.0f", f, u }')
    w=$(q "select coalesce((select (flush_lsn - '0/0')::bigint from pg_stat_replication where application_name = 'pg_receivewal'), 0)")
    read -r mf mu <<< "$m"
    [ "${mf:-0}" -ge "$END" ] && [ "${mu:-0}" -ge "$END" ] && [ "$w" -ge "$END" ] && break
    sleep 0.5
  done
  sleep 1
  event drained
  touch "$W/sampler.stop"
  wait "$SPID" || true
  segs=$("$BIN" --repo "$W/repo-keep" list 2>/dev/null | grep -cE '^[0-9A-F]{24}' || true)
  P1ERR=$(log_problems "$W/receive-keep.log")
  P1PRW=$(log_problems "$W/prw-keep.log")
  METRICS_END=$(curl -s --max-time 2 "$url" | grep -E '^pitr_receive_(errors_total|reconnects_total)' | tr '\n' ' ')
  stop_pid "$PITR1"
  stop_pid "$PRW1"
  P1=$(python3 "$W/sampler.py" report "$W/samples.tsv" "$W/events")
  P1="$P1
- Load: 1-min load average $L1 before the load, $(cut -d' ' -f1 /proc/loadavg) after; TPC-B $TPS1 tps. The receiver stored $segs complete segments in its repository; its log has $P1ERR warning/error lines, pg_receivewal's $P1PRW; at the end: \`$METRICS_END\`."
  echo "$P1" >&2
fi

# ---------------------------------------------------------------- part 2: synchronous commit latency
if [ -z "$SKIP_PART2" ]; then
  log "part 2: synchronous commit latency (${SYNC_CONFIGS}; clients ${SYNC_CLIENTS}; ${SYNC_SECONDS} s each; $SYNC_ROUNDS rounds)"
  # a quiet cluster: no pgbench tables left for autovacuum, no dirty buffers
  q "drop table if exists pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" > /dev/null
  q "alter system set synchronous_commit = on" > /dev/null
  q "alter system set synchronous_standby_names = ''" > /dev/null
  q "select pg_reload_conf()" > /dev/null
  q "create table if not exists sync_bench (id bigserial primary key, v int not null)" > /dev/null
  q "checkpoint" > /dev/null
  printf '%s\n' '\set v random(1, 1000000000)' 'insert into sync_bench (v) values (:v);' > "$W/insert.sql"
  : > "$W/sync-runs.txt" # round config clients tps load
  : > "$W/sync-problems.txt" # config count
  read -r -a CFGS <<< "$SYNC_CONFIGS"
  for r in $(seq 1 "$SYNC_ROUNDS"); do
    order=("${CFGS[@]}")
    if [ $((r % 2)) = 0 ]; then # even rounds in reverse order: no configuration always runs first
      order=()
      for ((i = ${#CFGS[@]} - 1; i >= 0; i--)); do order+=("${CFGS[$i]}"); done
    fi
    for cfg in "${order[@]}"; do
      SB="" SLOG=""
      case $cfg in
        none) ssn="" ;;
        pg_receivewal) start_prw "sync-r$r"; SB=$WPID SLOG=$W/prw-sync-r$r.log ssn=pg_receivewal ;;
        pitr-spool) start_pitr "spool-r$r" --synchronous-durability spool; SB=$RPID SLOG=$W/receive-spool-r$r.log ssn=pitr ;;
        pitr-repository) start_pitr "repository-r$r" --synchronous-durability repository; SB=$RPID SLOG=$W/receive-repository-r$r.log ssn=pitr ;;
        *) die "unknown configuration $cfg" ;;
      esac
      q "alter system set synchronous_standby_names = '$ssn'" > /dev/null
      q "select pg_reload_conf()" > /dev/null
      [ -z "$ssn" ] || wait_standby "$ssn" sync
      for c in $SYNC_CLIENTS; do
        q "checkpoint" > /dev/null
        j=$((c < 2 ? c : 2))
        mkdir -p "$W/lat/$cfg-$c"
        ld=$(cut -d' ' -f1 /proc/loadavg)
        out=$W/pgbench-$cfg-$c-r$r.log
        pgbench -n -f "$W/insert.sql" -c "$c" -j "$j" -T "$SYNC_SECONDS" -l --log-prefix="$W/lat/$cfg-$c/r$r" > "$out" 2>&1 ||
          { cat "$out" >&2; die "pgbench ($cfg, $c clients) failed"; }
        tps=$(grep -oE 'tps = [0-9.]+ \(without' "$out" | grep -oE '[0-9.]+')
        [ -z "$SB" ] || kill -0 "$SB" 2>/dev/null || die "$cfg exited during the run"
        echo "$r $cfg $c $tps $ld" >> "$W/sync-runs.txt"
        log "round $r, $cfg, $c clients: $tps tps"
      done
      q "alter system set synchronous_standby_names = ''" > /dev/null
      q "select pg_reload_conf()" > /dev/null
      if [ -n "$SB" ]; then
        stop_pid "$SB"
        echo "$cfg $(log_problems "$SLOG")" >> "$W/sync-problems.txt"
      fi
    done
  done
  P2=""
  for cfg in "${CFGS[@]}"; do
    for c in $SYNC_CLIENTS; do
      # latency: every transaction of every round (per-transaction logs, field 3 = µs)
      stats=$(cat "$W/lat/$cfg-$c"/r* | awk '{ print $3 / 1000 }' | sort -g |
        awk '{ v[NR] = $1; s += $1 } END { printf "%d %.2f %.2f %.2f", NR, s / NR, v[int((NR + 1) * 0.5)], v[int(NR * 0.99 + 0.999)] }')
      tps=$(awk -v k="$cfg" -v c="$c" '$2 == k && $3 == c { n++; s += $4; if (!lo || $4 < lo) lo = $4; if ($4 > hi) hi = $4 }
        END { printf "**%.0f** (%.0f–%.0f)", s / n, lo, hi }' "$W/sync-runs.txt")
      lds=$(awk -v k="$cfg" -v c="$c" '$2 == k && $3 == c { l = l (l ? ", " : "") $5 } END { print l }' "$W/sync-runs.txt")
      probs=$(awk -v k="$cfg" '$1 == k { s += $2; n++ } END { print n ? s : "–" }' "$W/sync-problems.txt")
      case $cfg in
        none) d="no standby: synchronous_standby_names = '' (local fsync only)" ;;
        pg_receivewal) d="\`pg_receivewal --synchronous\` (application_name pg_receivewal)" ;;
        pitr-spool) d="\`wal-archiver receive --synchronous-durability spool\`" ;;
        pitr-repository) d="\`wal-archiver receive --synchronous-durability repository\` (local directory)" ;;
      esac
      read -r n avg p50 p99 <<< "$stats"
      P2="$P2| $cfg | $d | $c | $tps | $n | $avg | $p50 | $p99 | $lds | $probs |
"
    done
  done
  P2=${P2%$'\n'}
  echo "$P2" >&2
fi

# ---------------------------------------------------------------- report
{
  echo "## compare-receive.sh, run of $DATE_START"
  echo
  echo "- Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Debian $(cat /etc/debian_version), kernel $(uname -r); scratch $W on $(df -T "$W" | awk 'NR==2{print $2 " (" $1 ")"}'); shared with other work."
  echo "- Load average (1/5/15 min): $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end ($(date -u +%FT%TZ))."
  echo "- wal-archiver: $PITR_REV. $(postgres --version), $(pg_receivewal --version)."
  echo "- Method: \`benches/compare-receive.sh\` (header comment): one throwaway cluster (wal_level=replica, shared_buffers=256MB, max_wal_size=1GB, checkpoint_timeout=1min, full_page_writes=on, wal_compression=off), clients on 127.0.0.1 TCP, the receiver's repository a local directory on the same disk."
  if [ -n "$P1" ]; then
    echo
    echo "### Keeping up: pitr receive (--partial-interval 1, durability spool) and pg_receivewal$([ "$PRW_SYNC" = 1 ] && echo " --synchronous") on the same stream, synchronous_commit=off"
    echo
    echo "Load: \`pgbench -i -s $LOAD_SCALE -q\`, then \`pgbench -n -c $LOAD_CLIENTS -j 2 -T $LOAD_SECONDS\`; samples every $SAMPLE_INTERVAL s; lag bytes against the sampled \`pg_current_wal_lsn()\`; \"behind\" = seconds since the server's LSN passed the client's flushed (uploaded) LSN."
    echo
    echo "$P1"
  fi
  if [ -n "$P2" ]; then
    echo
    echo "### Commit latency as the synchronous standby (synchronous_commit=on)"
    echo
    echo "One-row INSERT (bigserial key), \`pgbench -n -c C -j min(C,2) -T $SYNC_SECONDS -l\`, $SYNC_ROUNDS rounds (even rounds in reverse configuration order; each standby started on an empty directory / repository each round and checked to be \`sync\` in pg_stat_replication); pgbench tables of part 1 dropped first, CHECKPOINT before each run. TPS: mean (min–max) of the rounds; latency: every transaction of every round, from the per-transaction logs. \"problems\" = warning/error lines in the standby's logs."
    echo
    echo "| config | standby | clients | TPS | transactions | avg ms | p50 ms | p99 ms | load 1m per round | problems |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "$P2"
  fi
} > "$W/report.md"
log "done"
