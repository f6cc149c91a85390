#!/usr/bin/env bash
# `make test`: set up, start a private broker, isolate topics and database, ruff, pytest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" --browser
load_env
export PATH="$VENV/bin:$PATH"
export DJANGO_SETTINGS_MODULE=tredye.settings.test
mkdir -p var

say "ruff"
ruff check .
ruff format --check .

RUN_ID="$$_$RANDOM"
KAFKA_PORT="$(free_port)"
BROKER_PID="$(start_broker "$KAFKA_PORT" "var/test-broker-$KAFKA_PORT.log")"
trap 'kill "$BROKER_PID" 2>/dev/null || true; rm -f "var/test-broker-$KAFKA_PORT.log"' EXIT
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export KAFKA_TOPIC_PREFIX="test_${RUN_ID}."
export TEST_DATABASE_NAME="test_tredye_${RUN_ID}"
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium)}"
say "pytest (broker 127.0.0.1:$KAFKA_PORT, topics ${KAFKA_TOPIC_PREFIX}*, database $TEST_DATABASE_NAME)"
pytest "$@"
