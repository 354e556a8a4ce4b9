#!/usr/bin/env bash
# compare-push-get.sh CORPUS [RUNS] — whole-program archive_command / restore_command
# comparison of pitr's wal-archiver with pgBackRest and shell pipelines, on one WAL corpus
# (made by make-wal-corpus.sh), all tools in the same run so that they share the load.
#
# push: like PostgreSQL's archiver draining a backlog: every segment linked into a stub data
#   directory's pg_wal with a .ready file, then oldest first, sequentially, one
#   `/bin/sh -c archive_command` per segment with cwd = data directory and %p = pg_wal/<seg>,
#   .ready renamed to .done after each success. Timed from the first call to the last exit;
#   the repository must then hold every segment. Repository size = `du -sb` of its directory.
# get: like the startup process in archive recovery: one `/bin/sh -c restore_command` per
#   segment (%f = <seg>, %p = pg_wal/RECOVERYXLOG), the file moved aside after each call;
#   afterwards every fetched segment is compared with the corpus (cmp).
# The calls are made by a small runner (python3) that is a child subreaper: it takes each
# call's peak RSS and CPU time from wait4(2) (the figures GNU `time -f %M` prints, without an
# extra process in the timed loop), and also reaps the detached background workers some tools
# start (pitr push-ahead / prefetch, pgBackRest async), whose RSS and CPU GNU time cannot see.
# It waits for those workers after the timed loop, before the next tool starts.
# Each run goes through every tool (order rotated per run); figures are median (min–max).
#
# Tools (env TOOLS, space-separated; default below):
#   pitr            target/release/wal-archiver push/get with its defaults
#   pitr-sync       same with --push-ahead 0 --prefetch 0 (one file per call, no background work)
#   pitr-enc, pitr-sync-enc  the same two with client-side encryption (--encryption-key-file,
#                   a key made by `wal-archiver keys new-key-file` in $BENCH_TMP)
#   pitr-T1-T2...   tokens lN (--compress-level N), tN (--compress-threads N), aN (--push-ahead
#                   N), pN (--prefetch N); a and p default to 0 here (synchronous), e.g. pitr-l1-t2
#   pgbackrest      pgBackRest archive-push/-get, posix repo, zst level 3, process-max 1, sync
#   pgbackrest-async  same with archive-async=y, process-max 2 (spool in the work directory)
#   zstd1, zstd3    `zstd -1|-3` to a .tmp file, fsync, rename, fsync directory; `zstd -dc`
#   cp              plain copy + the same fsyncs (the physical floor); `cp` back
#
# Started as root it installs what is missing (pgbackrest zstd python3), builds the release
# binary (cargo build --release -p wal-archiver, as the calling user), copies it to the
# scratch directory (so that concurrent rebuilds cannot change it mid-run) and measures as the
# `postgres` OS user. Results: a markdown section appended to benches/RESULTS.md (RESULTS_MD)
# and raw figures in $BENCH_TMP/results.tsv.
# Knobs: BENCH_TMP (scratch, default /tmp/pitr-bench/work; keep it on the corpus's filesystem),
# TOOLS, RESULTS_MD, BENCH_KEEP=1 (keep the last work directories), NO_BUILD=1, BENCH_LIMIT (s).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
USAGE="usage: compare-push-get.sh CORPUS [RUNS]"
CORPUS=$(readlink -f "${1:?$USAGE}")
RUNS=${2:-3}
export BENCH_TMP=${BENCH_TMP:-/tmp/pitr-bench/work}
export TOOLS=${TOOLS:-"pitr pitr-sync pgbackrest pgbackrest-async zstd1 zstd3 cp pitr-l1-t0 pitr-l1-t1 pitr-l1-t2 pitr-l2-t0 pitr-l2-t1 pitr-l2-t2 pitr-l3-t0 pitr-l3-t1"}
RESULTS_MD=${RESULTS_MD:-$HERE/RESULTS.md}
export LC_ALL=C
log() { echo "[$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- outer: setup and report
if [ -z "${PITR_BENCH_INNER:-}" ]; then
  [ -d "$CORPUS/wal" ] && [ -f "$CORPUS/pgdata-stub/global/pg_control" ] || die "$CORPUS: not a corpus (make-wal-corpus.sh)"
  missing=()
  command -v pgbackrest >/dev/null || missing+=(pgbackrest)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "please install: ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
  fi
  if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release -p wal-archiver"
    (cd "$ROOT" && cargo build --release -p wal-archiver)
  fi
  rm -rf "$BENCH_TMP"
  mkdir -p "$BENCH_TMP/bin"
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/wal-archiver" "$BENCH_TMP/bin/wal-archiver"
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- common wal-archiver 2>/dev/null || rev="$rev + uncommitted changes"
  export PITR_REV="$rev, built $(date -u -r "${CARGO_TARGET_DIR:-$ROOT/target}/release/wal-archiver" +%FT%TZ)"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$BENCH_TMP"
    runuser -u postgres -- env PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-5400}" bash "$HERE/compare-push-get.sh" "$CORPUS" "$RUNS"
  else
    PITR_BENCH_INNER=1 timeout -k 30 "${BENCH_LIMIT:-5400}" bash "$HERE/compare-push-get.sh" "$CORPUS" "$RUNS"
  fi
  if [ ! -f "$RESULTS_MD" ]; then
    printf '%s\n\n%s\n' "# pitr WAL push/get benchmark results" \
      "Produced by \`benches/compare-push-get.sh\` (see \`benches/README.md\`); newest run last." > "$RESULTS_MD"
  fi
  { echo; cat "$BENCH_TMP/report.md"; } >> "$RESULTS_MD"
  cat "$BENCH_TMP/report.md"
  log "appended to $RESULTS_MD"
  exit 0
fi

# ---------------------------------------------------------------- inner: measurements
BIN=$BENCH_TMP/bin/wal-archiver
KEY=$BENCH_TMP/pitr-bench.key
[ -f "$KEY" ] || "$BIN" keys new-key-file "$KEY" > /dev/null
TSV=$BENCH_TMP/results.tsv
: > "$TSV"
ls "$CORPUS/wal" | grep -E '^[0-9A-F]{24}$' | sort > "$BENCH_TMP/segments"
mapfile -t SEGS < "$BENCH_TMP/segments"
N=${#SEGS[@]}
[ "$N" -gt 0 ] || die "no segments in $CORPUS/wal"
RAW=$((N * 16777216))
read -r -a TOOL_LIST <<< "$TOOLS"
cleanup() { [ -n "${BENCH_KEEP:-}" ] || rm -rf "${BENCH_TMP:?}"/t.*; }
trap cleanup EXIT

# The runner: runs CMD once per segment as PostgreSQL would and prints
# "seconds call_maxrss_kib call_cpu_s workers worker_maxrss_kib worker_cpu_s".
cat > "$BENCH_TMP/runner.py" <<'PY'
import ctypes, os, sys, time
cmd, phase, pgdata, fetched, segfile = sys.argv[1:6]
segs = open(segfile).read().split()
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned workers come to us
call_rss = call_cpu = bg_rss = bg_cpu = bg_n = 0
def reap(deadline):
    """Collects exited background workers; waits for all of them until deadline (0 = no wait)."""
    global bg_rss, bg_cpu, bg_n
    while True:
        try:
            pid, _, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)
            continue
        bg_n += 1
        bg_rss = max(bg_rss, ru.ru_maxrss)
        bg_cpu += ru.ru_utime + ru.ru_stime
os.chdir(pgdata)
t0 = time.perf_counter()
for s in segs:
    c = cmd.replace("%p", f"pg_wal/{s}" if phase == "push" else "pg_wal/RECOVERYXLOG").replace("%f", s)
    pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", c], os.environ)
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{phase} failed for {s} (exit {os.waitstatus_to_exitcode(status)}): {c}")
    call_rss = max(call_rss, ru.ru_maxrss)
    call_cpu += ru.ru_utime + ru.ru_stime
    if phase == "push":
        os.rename(f"pg_wal/archive_status/{s}.ready", f"pg_wal/archive_status/{s}.done")
    else:
        os.rename("pg_wal/RECOVERYXLOG", os.path.join(fetched, s))
    reap(0)
seconds = time.perf_counter() - t0
reap(time.monotonic() + 120)  # untimed: let background workers finish before the next tool
print(f"{seconds:.3f} {call_rss} {call_cpu:.3f} {bg_n} {bg_rss} {bg_cpu:.3f}")
PY

pitr_flags() {  # pitr / pitr-sync / pitr-enc / pitr-sync-enc / pitr-l1-t2-a0-p0 -> wal-archiver flags
  local t=$1 tok l="" th="" a=0 p=0
  case $t in
    pitr) return 0 ;;
    pitr-sync) echo "--push-ahead 0 --prefetch 0"; return 0 ;;
    pitr-enc) echo "--encryption-key-file $KEY"; return 0 ;;
    pitr-sync-enc) echo "--push-ahead 0 --prefetch 0 --encryption-key-file $KEY"; return 0 ;;
  esac
  IFS=- read -r -a toks <<< "${t#pitr-}"
  for tok in "${toks[@]}"; do
    case $tok in
      l[0-9]*) l=${tok#l} ;; t[0-9]*) th=${tok#t} ;; a[0-9]*) a=${tok#a} ;; p[0-9]*) p=${tok#p} ;;
      *) die "unknown pitr variant token '$tok' in $t" ;;
    esac
  done
  echo "${l:+--compress-level $l }${th:+--compress-threads $th }--push-ahead $a --prefetch $p"
}
# commands with %p / %f, for a tool whose work directory is $2 (repository $2/repo)
push_cmd() {
  local r=$2/repo f
  case $1 in
    pitr*) f=$(pitr_flags "$1"); echo "$BIN --repo $r ${f:+$f }push %p" ;;
    pgbackrest*) echo "pgbackrest --config=$2/pgbackrest.conf --stanza=bench archive-push %p" ;;
    zstd1 | zstd3) echo "test ! -f $r/%f.zst && zstd -q -${1#zstd} -c < %p > $r/%f.zst.tmp && sync $r/%f.zst.tmp && mv $r/%f.zst.tmp $r/%f.zst && sync $r" ;;
    cp) echo "test ! -f $r/%f && cp %p $r/%f.tmp && sync $r/%f.tmp && mv $r/%f.tmp $r/%f && sync $r" ;;
    *) die "unknown tool $1" ;;
  esac
}
get_cmd() {
  local r=$2/repo f
  case $1 in
    pitr*) f=$(pitr_flags "$1"); echo "$BIN --repo $r ${f:+$f }get %f %p" ;;
    pgbackrest*) echo "pgbackrest --config=$2/pgbackrest.conf --stanza=bench archive-get %f %p" ;;
    zstd1 | zstd3) echo "zstd -q -dc < $r/%f.zst > %p" ;;
    cp) echo "cp $r/%f %p" ;;
  esac
}
describe() {
  case $1 in
    pitr) echo "wal-archiver defaults" ;;
    pitr-*) echo "wal-archiver $(pitr_flags "$1")" ;;
    pgbackrest) echo "pgBackRest $(pgbackrest version | awk '{print $2}') zst:3, process-max 1, sync" ;;
    pgbackrest-async) echo "pgBackRest zst:3, archive-async, process-max 2" ;;
    zstd1 | zstd3) echo "zstd -${1#zstd} CLI $(zstd -V | grep -oE 'v[0-9.]+' | head -1) + fsync + rename" ;;
    cp) echo "cp + fsync + rename (floor)" ;;
  esac
}
# fresh work directory: stub data dir with every segment .ready, empty repository
prepare() {
  local t=$1 w=$2 s
  rm -rf "$w"
  mkdir -p "$w/repo" "$w/fetched" "$w/pgdata/pg_wal/archive_status" "$w/pgdata/global"
  chmod 700 "$w/pgdata"
  cp "$CORPUS/pgdata-stub/PG_VERSION" "$w/pgdata/"
  cp "$CORPUS/pgdata-stub/global/pg_control" "$w/pgdata/global/"
  for s in "${SEGS[@]}"; do
    ln "$CORPUS/wal/$s" "$w/pgdata/pg_wal/$s" 2>/dev/null || cp "$CORPUS/wal/$s" "$w/pgdata/pg_wal/$s"
    : > "$w/pgdata/pg_wal/archive_status/$s.ready"
  done
  case $t in
    pgbackrest | pgbackrest-async)
      local async=n pmax=1
      [ "$t" = pgbackrest-async ] && async=y pmax=2
      mkdir -p "$w/pgbr/log" "$w/pgbr/lock" "$w/pgbr/spool"
      cat > "$w/pgbackrest.conf" <<CONF
[global]
repo1-path=$w/repo
log-path=$w/pgbr/log
lock-path=$w/pgbr/lock
spool-path=$w/pgbr/spool
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=3
process-max=$pmax
archive-async=$async

[bench]
pg1-path=$w/pgdata
CONF
      pgbackrest --config="$w/pgbackrest.conf" --stanza=bench --no-online stanza-create > "$w/init.log" 2>&1 ||
        { cat "$w/init.log" >&2; die "pgbackrest stanza-create failed"; } ;;
  esac
  cat "$w"/pgdata/pg_wal/0* > /dev/null # WAL being archived is normally still in the page cache
  sync
}
# run_phase TOOL RUN PHASE WORKDIR: timed calls, then the figures into the TSV
run_phase() {
  local t=$1 run=$2 phase=$3 w=$4 cmd out
  if [ "$phase" = push ]; then cmd=$(push_cmd "$t" "$w"); else cmd=$(get_cmd "$t" "$w"); fi
  record "$phase" "$t" "$run" load "$(cut -d' ' -f1 /proc/loadavg)"
  out=$(python3 "$BENCH_TMP/runner.py" "$cmd" "$phase" "$w/pgdata" "$w/fetched" "$BENCH_TMP/segments") || die "$t $phase failed"
  read -r secs crss ccpu bgn bgrss bgcpu <<< "$out"
  record "$phase" "$t" "$run" seconds "$secs"
  record "$phase" "$t" "$run" call_rss_mib "$(awk -v k="$crss" 'BEGIN{printf "%.1f", k/1024}')"
  record "$phase" "$t" "$run" worker_rss_mib "$(awk -v k="$bgrss" -v n="$bgn" 'BEGIN{printf "%.1f", n ? k/1024 : 0}')"
  record "$phase" "$t" "$run" workers "$bgn"
  record "$phase" "$t" "$run" cpu_ms "$(awk -v a="$ccpu" -v b="$bgcpu" -v n="$N" 'BEGIN{printf "%.1f", 1000*(a+b)/n}')"
  echo "$secs"
}
stored_count() { find "$1/repo" -regextype posix-extended -type f -regex '.*/[0-9A-F]{24}(-[0-9a-f]{40})?(\.zst)?' | wc -l; }
verify() {
  local w=$1 s bad=0
  for s in "${SEGS[@]}"; do cmp -s "$w/fetched/$s" "$CORPUS/wal/$s" || bad=$((bad + 1)); done
  [ "$bad" = 0 ] || die "$bad fetched segments differ from the corpus"
}
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$TSV"; } # phase tool run metric value

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_START=$(date -u +%FT%TZ)
log "corpus $CORPUS: $N segments; tools: ${TOOL_LIST[*]}; $RUNS runs"
k=${#TOOL_LIST[@]}
for run in $(seq 1 "$RUNS"); do
  for i in $(seq 0 $((k - 1))); do
    t=${TOOL_LIST[$(((i + run - 1) % k))]}
    w=$BENCH_TMP/t.$t
    prepare "$t" "$w"
    ps=$(run_phase "$t" "$run" push "$w")
    stored=$(stored_count "$w")
    [ "$stored" -ge "$N" ] || die "$t: the repository holds $stored of $N segments after the last push returned"
    record push "$t" "$run" repo_bytes "$(du -sb "$w/repo" | cut -f1)"
    sync
    gs=$(run_phase "$t" "$run" get "$w")
    verify "$w"
    log "run $run $t: push $ps s, get $gs s"
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$w"
  done
done

# ---------------------------------------------------------------- report
# stat PHASE TOOL METRIC -> "median min max" over the runs
stat() {
  awk -F'\t' -v p="$1" -v t="$2" -v m="$3" '$1 == p && $2 == t && $4 == m { print $5 }' "$TSV" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan nan"; exit }
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print med, v[1], v[NR] }'
}
rate() { # PHASE TOOL -> seg/s "median min max" (the slowest run gives the min)
  local med lo hi
  read -r med lo hi <<< "$(stat "$1" "$2" seconds)"
  awk -v n="$N" -v a="$med" -v b="$hi" -v c="$lo" 'BEGIN { printf "%.1f %.1f %.1f", n / a, n / b, n / c }'
}
has() { local x; for x in "${TOOL_LIST[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }
ref_push=nan ref_get=nan ref_repo=nan
if has pgbackrest; then
  read -r ref_push _ _ <<< "$(rate push pgbackrest)"
  read -r ref_get _ _ <<< "$(rate get pgbackrest)"
  read -r ref_repo _ _ <<< "$(stat push pgbackrest repo_bytes)"
fi
row() { # PHASE TOOL -> one table row
  local p=$1 t=$2 r rlo rhi repo llo lhi crss wrss cpu
  read -r r rlo rhi <<< "$(rate "$p" "$t")"
  read -r repo _ _ <<< "$(stat "$p" "$t" repo_bytes)"
  read -r _ llo lhi <<< "$(stat "$p" "$t" load)"
  read -r _ _ crss <<< "$(stat "$p" "$t" call_rss_mib)"
  read -r _ _ wrss <<< "$(stat "$p" "$t" worker_rss_mib)"
  read -r cpu _ _ <<< "$(stat "$p" "$t" cpu_ms)"
  local ref=$ref_push
  [ "$p" = get ] && ref=$ref_get
  awk -v p="$p" -v t="$t" -v d="$(describe "$t")" -v r="$r" -v rlo="$rlo" -v rhi="$rhi" -v ref="$ref" -v repo="$repo" \
    -v rref="$ref_repo" -v raw="$RAW" -v crss="$crss" -v wrss="$wrss" -v cpu="$cpu" -v llo="$llo" -v lhi="$lhi" 'BEGIN {
    x = (ref == "nan") ? "–" : sprintf("%.2f", r / ref)
    mem = sprintf("%.1f", crss) (wrss > 0 ? sprintf(" / %.1f", wrss) : "")
    printf "| %s | %s | **%.1f** (%.1f–%.1f) | %.0f | %.1f | %s |", t, d, r, rlo, rhi, r * 16.777216, 1000 / r, x
    if (p == "push")
      printf " %.1f | %.2f | %s |", repo / 1e6, raw / repo, (rref == "nan" ? "–" : (repo <= rref ? "yes" : "**no**"))
    printf " %s | %.1f | %.1f–%.1f |\n", mem, cpu, llo, lhi }'
}
{
  echo "## Run of $DATE_START: $N segments, $RUNS runs"
  echo
  echo "- Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Debian $(cat /etc/debian_version), kernel $(uname -r); scratch $BENCH_TMP on $(df -T "$BENCH_TMP" | awk 'NR==2{print $2 " (" $1 ")"}')."
  echo "- Load average (1/5/15 min): $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end ($(date -u +%FT%TZ)); the last column is the 1-min load when each of the tool's runs started."
  echo "- Corpus \`$CORPUS\`: $(sed -n 1p "$CORPUS/corpus.info" 2>/dev/null)"
  sed -n '2,4p' "$CORPUS/corpus.info" 2>/dev/null | sed 's/^/  /'
  echo "- wal-archiver: $PITR_REV. $(pgbackrest version), zstd CLI $(zstd -V | grep -oE 'v[0-9.]+' | head -1)."
  echo "- Method: \`benches/compare-push-get.sh $CORPUS $RUNS\`: one \`/bin/sh -c\` per segment, oldest first, sequential, cwd = stub data dir, every segment .ready at the start (a backlog); median (min–max) of $RUNS runs, tools interleaved. RSS = largest peak RSS of one call (wait4, as GNU time %M) / of one detached background worker; CPU = user+sys of calls and workers per segment (median run)."
  echo
  echo "### push (archive_command)"
  echo
  echo "| tool | config | seg/s | MB/s | ms/seg | × pgBackRest | repo MB | ratio | repo ≤ pgBackRest | max RSS MiB call / worker | CPU ms/seg | load 1m |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
  for t in "${TOOL_LIST[@]}"; do row push "$t"; done
  echo
  echo "### get (restore_command), every fetched segment compared with the corpus"
  echo
  echo "| tool | config | seg/s | MB/s | ms/seg | × pgBackRest | max RSS MiB call / worker | CPU ms/seg | load 1m |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  for t in "${TOOL_LIST[@]}"; do row get "$t"; done
  if has pgbackrest; then
    echo
    echo "### Targets (vs pgBackRest sync, same run): push ≥ 2×, repo ≤ pgBackRest, get ≥ 2×, RSS < 64 MiB"
    echo
    for t in "${TOOL_LIST[@]}"; do
      case $t in pitr*) ;; *) continue ;; esac
      read -r pp _ _ <<< "$(rate push "$t")"
      read -r pg _ _ <<< "$(rate get "$t")"
      read -r repo _ _ <<< "$(stat push "$t" repo_bytes)"
      read -r _ _ m1 <<< "$(stat push "$t" call_rss_mib)"
      read -r _ _ m2 <<< "$(stat push "$t" worker_rss_mib)"
      read -r _ _ m3 <<< "$(stat get "$t" call_rss_mib)"
      read -r _ _ m4 <<< "$(stat get "$t" worker_rss_mib)"
      awk -v t="$t" -v pp="$pp" -v rp="$ref_push" -v pg="$pg" -v rg="$ref_get" -v a="$repo" -v b="$ref_repo" \
        -v m="$(printf '%s\n' "$m1" "$m2" "$m3" "$m4" | sort -g | tail -1)" 'BEGIN {
        ok = (pp >= 2 * rp) && (a <= b) && (pg >= 2 * rg) && (m < 64)
        printf "- `%s`: push %.2f× %s, repo %+.2f%% %s, get %.2f× %s, max RSS %.1f MiB %s → %s\n", t,
          pp / rp, (pp >= 2 * rp ? "ok" : "**below**"), 100 * (a - b) / b, (a <= b ? "ok" : "**larger**"),
          pg / rg, (pg >= 2 * rg ? "ok" : "**below**"), m, (m < 64 ? "ok" : "**over**"), (ok ? "all met" : "**not all met**") }'
    done
  fi
  echo
  echo "<details><summary>commands (\$W = the tool's work directory)</summary>"
  echo
  for t in "${TOOL_LIST[@]}"; do
    w=$BENCH_TMP/t.$t
    echo "- \`$t\` push: \`$(push_cmd "$t" "$w" | sed "s#$w#\$W#g; s#$BIN#wal-archiver#g")\`"
    echo "  get: \`$(get_cmd "$t" "$w" | sed "s#$w#\$W#g; s#$BIN#wal-archiver#g")\`"
  done
  echo
  echo "</details>"
} > "$BENCH_TMP/report.md"
