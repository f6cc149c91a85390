#!/usr/bin/env bash
# `make run`: set up, migrate, load demo data, start every process. Ctrl-C stops all of it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
load_env
export PATH="$VENV/bin:$PATH"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-tredye.settings.local}"
export HTTP_HOST="${HTTP_HOST:-127.0.0.1}" HTTP_PORT="${HTTP_PORT:-8000}"
mkdir -p var

BROKER_PID=""
cleanup() { if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
  if port_open 127.0.0.1 "$KAFKA_PORT"; then
    say "using the Kafka broker already listening on 127.0.0.1:$KAFKA_PORT"
  else
    say "starting the local Kafka-protocol broker (Tansu) on 127.0.0.1:$KAFKA_PORT"
    BROKER_PID="$(start_rolling_broker "$KAFKA_PORT" var/kafka-broker.log)"
  fi
else
  say "using Kafka at $KAFKA_BOOTSTRAP_SERVERS"
fi

if port_open "$HTTP_HOST" "$HTTP_PORT"; then
  warn "port $HTTP_PORT is taken: stop what runs there or set HTTP_PORT"; exit 1
fi

# Metrics start from zero each run: drop the previous run's files (tredye.metrics).
PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-var/prometheus}"
if [ -d "$PROMETHEUS_MULTIPROC_DIR" ]; then
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
fi

python manage.py migrate --noinput
python manage.py kafka_topics
python manage.py seed_demo
say "Tredye is starting at http://$HTTP_HOST:$HTTP_PORT  (Ctrl-C stops everything)"
trap ':' INT  # Ctrl-C reaches honcho, which stops every process; then we clean up here
status=0
honcho start -f Procfile || status=$?
if [ "$status" -eq 0 ] || [ "$status" -eq 130 ]; then say "Tredye stopped"; exit 0; fi
exit "$status"
