#!/usr/bin/env bash
# quick.sh [OUTDIR] — the benchmarks in quick mode, for CI: a small WAL corpus (8 segments,
# pgbench scale 5) through compare-push-get.sh (pitr, pitr-sync, pitr-enc, pgBackRest, cp; 1 run), and
# compare-backup-restore.sh at pgbench scale 10 (pitr, pitr-enc, pg_basebackup, pgBackRest; 1 run).
# A few minutes on 2 cores, after the release build. It asserts nothing about timings: it
# fails only when a tool fails (a wrong byte fetched back, a restore without its markers).
#
# Writes into OUTDIR (default $BENCH_QUICK_DIR or /tmp/pitr-bench-quick): quick.md, the human
# tables the two comparisons print (the sections they would append to benches/RESULTS.md),
# and quick.json, every raw figure of both runs:
#   {"commit": "...", "date": "...", "machine": "...",
#    "push_get": [{"phase": "push", "tool": "pitr", "run": 1, "metric": "seconds", "value": 1.2}, ...],
#    "backup_restore": [{"phase": "backup", "tool": "pitr", "run": 1, "metric": "seconds", ...}, ...]}
# Started as root (like the comparisons, which then measure as the postgres OS user).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${1:-${BENCH_QUICK_DIR:-/tmp/pitr-bench-quick}}
rm -rf "$OUT"
mkdir -p "$OUT"
chmod 755 "$OUT"
[ "$(id -u)" = 0 ] && chown postgres "$OUT"
OUT=$(cd "$OUT" && pwd)

echo "== quick benchmarks into $OUT" >&2
CORPUS_SCALE=5 CORPUS_MAX_S=300 "$HERE/make-wal-corpus.sh" 8 "$OUT/corpus" > "$OUT/corpus.log" 2>&1 \
  || { tail -20 "$OUT/corpus.log" >&2; exit 1; }

RESULTS_MD="$OUT/quick.md" BENCH_TMP="$OUT/push-get" TOOLS="pitr pitr-sync pitr-enc pgbackrest cp" BENCH_LIMIT=900 \
  "$HERE/compare-push-get.sh" "$OUT/corpus" 1 >&2
RESULTS_MD="$OUT/quick.md" BENCH_TMP="$OUT/backup-restore" SCALE=10 RUNS=1 DROP_TEMPLATE=1 NO_BUILD=1 \
  BENCH_LIMIT=1200 "$HERE/compare-backup-restore.sh" >&2

python3 - "$OUT" "$ROOT" <<'PY'
import json, os, platform, subprocess, sys, time
out, root = sys.argv[1], sys.argv[2]
def rows(path):
    result = []
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) != 5:
            continue
        try:
            value = float(f[4])
        except ValueError:
            value = f[4]
        result.append({"phase": f[0], "tool": f[1], "run": int(f[2]), "metric": f[3], "value": value})
    return result
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
doc = {
    "commit": commit,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
    "push_get": rows(os.path.join(out, "push-get", "results.tsv")),
    "backup_restore": rows(os.path.join(out, "backup-restore", "results.tsv")),
}
assert doc["push_get"] and doc["backup_restore"], "a comparison wrote no figures"
with open(os.path.join(out, "quick.json"), "w") as f:
    json.dump(doc, f, indent=1)
print(f"quick benchmarks: {len(doc['push_get'])} + {len(doc['backup_restore'])} figures in {out}/quick.json, tables in {out}/quick.md", file=sys.stderr)
PY
