#!/usr/bin/env bash
# Builds the Debian package `pitr` (docs/install.md):
#   scripts/package.sh      # prints the path of the .deb: $TARGET/debian/pitr_<version>-1_<arch>.deb
# What it does, on a fresh Debian machine too:
#   1. installs cargo-deb (pinned, `cargo install --locked`, ~1.5 min once) into
#      $PITR_TOOLS/cargo-deb (default ~/.cache/pitr-tools); a quick no-op when it is there;
#   2. `cargo build --release` of the three programs (reused when up to date: cargo decides),
#      then of pitr-gen (packaging/) in a separate invocation, so that the generator's
#      dependencies never change how the programs are built;
#   3. pitr-gen writes the man pages (gzipped here) and shell completions, and the systemd
#      units of docs/systemd/ are copied with the programs' path changed to /usr/bin, all
#      into $TARGET/release/pitr-package/;
#   4. cargo deb --no-build --strip: the binaries stripped of their debug info (the release
#      profile keeps line tables for backtraces), packaged with packaging/Cargo.toml's assets.
# Env: CARGO_TARGET_DIR (honoured), PITR_TOOLS, CARGO_DEB_VERSION.
# Needs: cargo, dpkg-dev (dpkg-shlibdeps, for the dependencies), binutils (strip); installed
# with apt-get when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PITR_TOOLS="${PITR_TOOLS:-${HOME:-/root}/.cache/pitr-tools}"
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
DEB_ROOT="$PITR_TOOLS/cargo-deb"
CARGO_DEB="$DEB_ROOT/bin/cargo-deb"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
STAGE="$TARGET/release/pitr-package"

log() { echo "package.sh: $*" >&2; }

missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ -x "$CARGO_DEB" ] && grep -qs "\"cargo-deb $CARGO_DEB_VERSION " "$DEB_ROOT/.crates.toml"; then
  :
else
  log "installing cargo-deb $CARGO_DEB_VERSION into $DEB_ROOT (once)"
  mkdir -p "$DEB_ROOT"
  # Its own target dir, so it neither shares nor locks the project's.
  CARGO_TARGET_DIR="$PITR_TOOLS/.cargo-deb-build" \
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --root "$DEB_ROOT" >&2
  rm -rf "$PITR_TOOLS/.cargo-deb-build"
fi

log "release build (reused when up to date)"
cargo build --release --locked -p wal-archiver -p basebackup -p pitr-restore >&2
cargo build --release --locked -p pitr-packaging --bin pitr-gen >&2

rm -rf "$STAGE"
mkdir -p "$STAGE/systemd"
"$TARGET/release/pitr-gen" "$STAGE" >/dev/null
gzip -9nf "$STAGE"/man/man1/*.1
for unit in docs/systemd/*.service docs/systemd/*.timer; do
  { echo "# Installed by the Debian package pitr (docs/systemd/$(basename "$unit"), with the programs in"
    echo "# /usr/bin): the unit is in place; configure, then enable it (docs/install.md)."
    sed 's#/usr/local/bin/#/usr/bin/#g' "$unit"
  } >"$STAGE/systemd/$(basename "$unit")"
done
if grep -l /usr/local/ "$STAGE"/systemd/*; then
  log "a packaged unit still names /usr/local"
  exit 1
fi

mkdir -p "$TARGET/debian"
rm -f "$TARGET"/debian/pitr_*.deb
"$CARGO_DEB" -p pitr-packaging --no-build --strip --quiet --output "$TARGET/debian/" >/dev/null
deb="$(ls "$TARGET"/debian/pitr_*.deb)"
log "built $deb ($(stat -c %s "$deb") bytes)"
echo "$deb"
