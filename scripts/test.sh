#!/usr/bin/env bash
# `make test`: the idempotent setup, ruff, mypy (pyproject.toml), then pytest on the real services
# (scripts/pytest.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" --browser
say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
"$VENV/bin/mypy"
exec "$ROOT/scripts/pytest.sh" "$@"
