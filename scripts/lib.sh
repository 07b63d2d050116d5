# Shared shell helpers for ./scripts/dev and ./scripts/test. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (install it yourself, then re-run)"; fi
}

apt_install() {
  log "installing $* with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The pinned dependencies (the dev extras included), from pyproject.toml by ./scripts/lock.
LOCK="$ROOT/requirements/dev.lock"

# The venv with exactly the locked dependencies and the project (editable, without resolving its
# dependencies again). Re-installs only when pyproject.toml or the lock changed since the last
# install; a package the lock no longer lists stays until the venv is recreated (rm -rf .venv).
ensure_venv() {
  local stamp="$VENV/.installed-lock" want
  [ -f "$LOCK" ] || die "${LOCK#"$ROOT/"} is missing: run ./scripts/lock"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
  fi
  want="$(cat "$ROOT/pyproject.toml" "$LOCK" | cksum)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing the locked dependencies and the project into .venv"
    { "$VENV/bin/pip" install --disable-pip-version-check -r "$LOCK" \
        && "$VENV/bin/pip" install --disable-pip-version-check --no-deps -e "$ROOT"; } \
      >"$VENV/install.log" 2>&1 \
      || { tail -n 30 "$VENV/install.log" >&2; die "pip install failed (log: $VENV/install.log)"; }
    echo "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# PostgreSQL server binaries (initdb, pg_ctl, postgres): the newest installed major version,
# installed with apt when none is.
pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    apt_install postgresql postgresql-contrib
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  fi
  [ -x "$dir/initdb" ] || die "PostgreSQL server binaries not found"
  echo "$dir"
}

# Run a PostgreSQL binary as the user that owns the cluster (postgres when we are root:
# the server refuses to run as root).
pg_run() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_start DATADIR PORT SOCKETDIR [extra postgres -c options...]
# Initialises the cluster if needed (superuser postgres, password postgres, scram on TCP),
# starts it if it is not running, and waits until it accepts connections.
pg_start() {
  local data="$1" port="$2" sock="$3"; shift 3
  local bin; bin="$(pg_bindir)"
  mkdir -p "$data" "$sock"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user (install postgresql with apt)"
    chown postgres: "$data" "$sock"
    chmod 700 "$data"
    pg_run test -r "$data" || die "the postgres user cannot reach $data: move the checkout somewhere it can read"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $data"
    local pwfile; pwfile="$(mktemp)"; echo postgres >"$pwfile"; chmod 644 "$pwfile"
    pg_run "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
  fi
  if pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running in $data"
  else
    local opts="-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock"
    local o; for o in "$@"; do opts="$opts -c $o"; done
    pg_run "$bin/pg_ctl" -D "$data" -l "$data/server.log" -o "$opts" -w -t 60 start >/dev/null \
      || { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start"; }
  fi
}

pg_stop() {
  local data="$1" bin; bin="$(pg_bindir)"
  if [ -f "$data/PG_VERSION" ]; then
    pg_run "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# Node.js and npm (Debian's packages), installed when missing; the web client is built with them.
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
}

# The web client's dependencies (web/node_modules) exactly as package-lock.json pins them
# (`npm ci`), again only when the lock changed since the last install.
web_deps() {
  ensure_node
  local web="$ROOT/web" stamp="$ROOT/web/node_modules/.installed-lock" want
  want="$(cksum <"$web/package-lock.json")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing the web client's dependencies (npm ci)"
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    echo "$want" >"$stamp"
  fi
}

# The web client built into web/dist/, which the functions app serves at /.
build_web() {
  web_deps || die "npm ci failed in web/"
  log "building the web client"
  (cd "$ROOT/web" && npm run --silent build) || die "the web client did not build"
}
