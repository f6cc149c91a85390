"""The platform's Prometheus metrics, defined once, and `/metrics`, which serves them.

Every web (daphne) process and the stream worker count in their own process, yet Prometheus
must see one venue: prometheus-client's multiprocess mode. Each process writes its values to
memory-mapped files in `PROMETHEUS_MULTIPROC_DIR` (one directory per host, a setting, created
here on import), and a scrape of any web process merges every process's files
(`MultiProcessCollector`): counters and histograms summed, gauges as each says (`livesum`:
the sum over processes alive now). The directory must be set before prometheus-client makes
its first value, so this module sets it before it defines anything, and a process uses these
objects, never metrics of its own.

A process that ends removes its live gauges' files (`mark_process_dead` at exit); a process
that crashed cannot, so each scrape does it for files whose process is gone. Counters and
histograms of ended processes stay, so totals never go backwards while the venue runs;
`make run` starts with an empty directory, and so does each test run (scripts/*.sh).

Who may read it: clients at `METRICS_ALLOWED_IPS` (addresses or networks; by default this host
only), the client's address as `tredye.client_ip` finds it (X-Forwarded-For only from
`TRUSTED_PROXIES`, so a proxy on this host must be listed there, as it must for login
throttling). Anyone else gets a 404, as if there were nothing here: the figures say how busy
the venue is, not for the internet.

Instrumenting code (the WebSocket consumer and the stream worker, in marketdata) imports the
objects below. Label values must stay few (channel kinds, topics), never symbols or users.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
from functools import cache
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from tredye.api import error_response
from tredye.client_ip import request_client_ip

MULTIPROC_DIR = Path(settings.PROMETHEUS_MULTIPROC_DIR)
MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(MULTIPROC_DIR)

# Imported only now: prometheus-client picks its value class (in memory, or in the files of
# the directory) from the environment when it is first imported. Should anything have
# imported it sooner, pick again, so these metrics are shared in every case.
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import (  # noqa: E402
    MultiProcessCollector,
    mark_process_dead,
)

values.ValueClass = values.get_value_class()

# From 1 ms to 10 s: a message is batched for up to 16 ms (STREAM_FLUSH_INTERVAL_MS), the
# target is a p99 under 100 ms, and seconds mean a stream that has fallen behind.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.016,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# --- the WebSocket stream (/ws/stream/), counted by the web processes -----------------------
# `kind`: a data message's channel kind (ticker, book, trades, candles, orders, balances,
# positions) or a control message's op (welcome, status, heartbeat, error, pong, subscribed,
# unsubscribed): a fixed, small set.
WS_MESSAGE_LATENCY = Histogram(
    "tredye_ws_message_latency_seconds",
    "From an event's own time to its message being sent on a socket, in seconds.",
    ["kind"],
    buckets=LATENCY_BUCKETS_S,
)
WS_MESSAGES_SENT = Counter(
    "tredye_ws_messages_sent",
    "Messages sent to sockets (one per channel update per socket; a frame carries several).",
    ["kind"],
)
WS_FRAMES_SENT = Counter(
    "tredye_ws_frames_sent",
    "WebSocket frames sent to sockets (batches, status messages, heartbeats, errors).",
)
WS_CONNECTED_SOCKETS = Gauge(
    "tredye_ws_connected_sockets",
    "Sockets open now, over every live web process.",
    multiprocess_mode="livesum",
)
WS_CONFLATED_DROPS = Counter(
    "tredye_ws_conflated_drops",
    "Messages replaced by a newer one of the same channel and key before they were sent.",
    ["kind"],
)

# --- pages in the browser, reported by their own beacon (`frames_beacon`) --------------------
# `page`: one of BEACON_PAGES, a fixed set.
PAGE_FRAME_RENDER = Histogram(
    "tredye_page_frame_render_seconds",
    "Time a page spent applying stream updates and redrawing in one animation frame, as the "
    "browser measured it.",
    ["page"],
    buckets=(0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.05, 0.1, 0.25, 1.0),
)
BEACON_PAGES = frozenset({"trade", "watchlist"})
BEACON_MAX_FRAMES = 500
BEACON_MAX_BYTES = 16 * 1024

# --- the stream worker (run_stream) ---------------------------------------------------------
# `topic`: the Kafka topic it reads (without KAFKA_TOPIC_PREFIX).
STREAM_LAG = Gauge(
    "tredye_stream_lag_records",
    "Records the stream worker has yet to read: high watermark of its last fetch minus its "
    "position.",
    ["topic"],
    multiprocess_mode="livemax",
)
STREAM_LAST_EVENT_AGE = Gauge(
    "tredye_stream_last_event_age_seconds",
    "Seconds since the newest event the stream worker has read was made (its own time).",
    ["topic"],
    multiprocess_mode="livemax",
)

# --- reconciliation (set by trading.reconcile: each run, and each break resolved) -------------
# The latest count wins, whichever process set it (a `manage.py reconcile` that has ended too).
RECONCILIATION_OPEN_BREAKS = Gauge(
    "tredye_reconciliation_open_breaks",
    "Reconciliation breaks not resolved yet, as the latest run or resolution counted them.",
    multiprocess_mode="mostrecent",
)

# --- this endpoint --------------------------------------------------------------------------
SCRAPES = Counter("tredye_metrics_scrapes", "Scrapes of /metrics answered, by every process.")

LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


@atexit.register
def _forget_this_process() -> None:
    """Remove this process's live gauges when it ends (os.getpid(): a forked child is not its
    parent)."""
    mark_process_dead(os.getpid(), str(MULTIPROC_DIR))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def forget_dead_processes(path: Path) -> list[int]:
    """Remove the live gauges of processes that are gone (crashed, killed) from `path`, so
    their sockets are no longer counted; returns their ids."""
    dead = sorted(
        {
            pid
            for pid in (
                int(match.group(1))
                for match in (LIVE_GAUGE_FILE.fullmatch(name) for name in os.listdir(path))
                if match
            )
            if not _alive(pid)
        }
    )
    for pid in dead:
        mark_process_dead(pid, str(path))
    return dead


@cache
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in allowed)


def may_read(address: str | None) -> bool:
    """Whether a client at `address` may read the metrics (METRICS_ALLOWED_IPS)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.METRICS_ALLOWED_IPS)))


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every process's metrics, merged, in Prometheus's text format."""
    if not may_read(request_client_ip(request)):
        raise Http404
    SCRAPES.inc()
    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    forget_dead_processes(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@csrf_exempt
@require_POST
def frames_beacon(request: HttpRequest) -> HttpResponse:
    """A page's frame render times: `{"page": "trade", "frames_ms": [1.2, 0.8, ...]}` (at most
    BEACON_MAX_FRAMES, each 0..10,000 ms), sent by `navigator.sendBeacon`, which can carry no
    CSRF header; it changes nothing but a histogram. Anything else is a 400 that counts
    nothing."""
    if len(request.body) > BEACON_MAX_BYTES:
        return error_response("body_too_large", f"at most {BEACON_MAX_BYTES} bytes")
    try:
        payload = json.loads(request.body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return error_response("bad_json", "the body is not JSON")
    if not isinstance(payload, dict) or payload.get("page") not in BEACON_PAGES:
        return error_response("bad_page", f"page must be one of {', '.join(sorted(BEACON_PAGES))}")
    frames = payload.get("frames_ms")
    if (
        not isinstance(frames, list)
        or len(frames) > BEACON_MAX_FRAMES
        or not all(
            type(ms) in (int, float) and 0 <= ms <= 10_000
            for ms in frames  # noqa: E721
        )
    ):
        return error_response(
            "bad_frames",
            f"frames_ms must be a list of at most {BEACON_MAX_FRAMES} numbers 0..10000",
        )
    histogram = PAGE_FRAME_RENDER.labels(payload["page"])
    for ms in frames:
        histogram.observe(ms / 1000)
    return HttpResponse(status=204)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
