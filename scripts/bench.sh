#!/usr/bin/env bash
# `make bench`: the quick benchmarks, one after another; each prints its figures (none asserts).
# The long ones (bench/stream.py, bench/http_orders.py, bench/soak.py) are run by hand; their
# docstrings say how. Needs the setup of `make setup` (PostgreSQL, Redis, the virtualenv).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_env
export PATH="$VENV/bin:$PATH"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-tredye.settings.local}"

say "bench/engine.py: the matching engine alone"
python bench/engine.py --commands 200000 --repeats 3
say "bench/ratelimit.py: what the order-entry limit costs a request"
python bench/ratelimit.py --calls 2000 --rounds 3
say "bench/orders.py: the order path end to end (4 traders, 20 s)"
python bench/orders.py --traders 4 --seconds 20
