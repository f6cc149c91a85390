#!/usr/bin/env bash
# pytest against the real services: a private broker on a free port, an isolated topic prefix
# and test database. `make test` runs ruff and then this; developers may run it alone:
#   scripts/pytest.sh marketdata -k stream
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_env
export PATH="$VENV/bin:$PATH"
export DJANGO_SETTINGS_MODULE=tredye.settings.test
mkdir -p var

RUN_ID="$$_$RANDOM"
KAFKA_PORT="$(free_port)"
BROKER_LOG="var/test-broker-$KAFKA_PORT.log"
BROKER_PID="$(start_broker "$KAFKA_PORT" "$BROKER_LOG")"
# This run's own metrics directory (tredye.metrics), so parallel runs never add up each other's.
export PROMETHEUS_MULTIPROC_DIR="var/prometheus-test-$RUN_ID"
trap 'kill "$BROKER_PID" 2>/dev/null || true; rm -f "$BROKER_LOG"; rm -rf "$PROMETHEUS_MULTIPROC_DIR"' EXIT
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export KAFKA_TOPIC_PREFIX="test_${RUN_ID}."
export TEST_DATABASE_NAME="test_tredye_${RUN_ID}"
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium || true)}"
say "pytest (broker 127.0.0.1:$KAFKA_PORT, topics ${KAFKA_TOPIC_PREFIX}*, database $TEST_DATABASE_NAME)"
pytest "$@"
