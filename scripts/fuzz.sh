#!/usr/bin/env bash
# Fuzzes every parser of outside bytes (fuzz/, docs/fuzzing.md) for a while, one target after
# another, before a release: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...] (default 60 s,
# every target). Needs a nightly toolchain; installs cargo-fuzz if it is missing. New inputs
# that add coverage are written to fuzz/corpus/<target>/ (minimize them with
# `cargo +nightly fuzz cmin <target>` before committing), crashes to fuzz/artifacts/<target>/.
# One fuzzing process per target (libFuzzer's default: no -jobs, so its output and final
# stats stay on the terminal), so that the machine stays usable; FUZZ_ARGS adds libFuzzer
# options (e.g. FUZZ_ARGS="-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
secs="${1:-60}"
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Longest input each target is given: a little more than its largest useful input.
max_len() {
  case "$1" in
    wal_page_header | wal_file_name) echo 64 ;;
    wal_record) echo 16400 ;;
    tar) echo 8192 ;;
    manifest | codec) echo 4096 ;;
    pgwire_message | wal_history | config_toml) echo 1024 ;;
    conninfo | pgpass) echo 512 ;;
    *) echo 256 ;;
  esac
}

cargo +nightly fuzz build
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
failed=()
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s" >&2
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
  if ! cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=1024 \
    -max_len="$(max_len "$t")" -print_final_stats=1 ${FUZZ_ARGS:-}; then
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, no crash" >&2
