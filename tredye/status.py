"""The platform's own state: which part is degraded, and why, in words a trader can read.

Two sources, one answer (`platform_status`), used by `/readyz`, the stream worker's `status`
message and so the page:

- every long-running worker reports itself about once a second (`worker_report`): its lag,
  when it last made progress, whether it is connected. Reports live in Redis with a TTL, so a
  worker that dies disappears on its own; one that stops reporting is "silent".
- apps register checks that read the truth in PostgreSQL (`status_check_register`): the order
  path registers "commands waiting unapplied", which sees a stalled matcher, relay or broker
  alike, without Redis.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis
from django.conf import settings

from tredye.redis_clients import redis_client

logger = logging.getLogger(__name__)

REPORT_TTL_S = 30


@dataclass(frozen=True, slots=True)
class Degraded:
    """One degraded part: `part` names it, `state` is one of queued, stalled, silent, down."""

    part: str
    state: str
    message: str
    age_s: float | None = None


StatusCheck = Callable[[], list[Degraded]]
_checks: list[StatusCheck] = []


def status_check_register(check: StatusCheck) -> None:
    """Add a check (from an app's `ready()`): it returns the parts it finds degraded."""
    if check not in _checks:
        _checks.append(check)


def _key(name: str) -> str:
    return f"{settings.KAFKA_TOPIC_PREFIX}worker:{name}"


_warned = False


def _redis() -> redis.Redis:
    return redis_client(timeout_s=1)


def worker_report(
    name: str,
    *,
    lag: int | None,
    progress_age_s: float,
    connected: bool,
    consumed: int,
) -> None:
    """Publish a worker's state (never raises: a worker keeps working without Redis)."""
    global _warned  # noqa: PLW0603
    report = {
        "name": name,
        "pid": os.getpid(),
        "lag": lag,
        "progress_age_s": round(progress_age_s, 3),
        "connected": connected,
        "consumed": consumed,
        "at": time.time(),
    }
    try:
        _redis().set(_key(name), json.dumps(report), ex=REPORT_TTL_S)
        _warned = False
    except (redis.RedisError, OSError) as error:
        if not _warned:
            logger.warning("status: cannot report %s to Redis (%s)", name, error)
            _warned = True


def worker_forget(name: str) -> None:
    """Remove a worker's report when it stops cleanly (a crashed one goes silent instead)."""
    try:
        _redis().delete(_key(name))
    except (redis.RedisError, OSError):
        logger.debug("status: cannot remove the report of %s", name)


def worker_reports() -> dict[str, dict]:
    """Every worker's last report, by name (empty when Redis cannot be read)."""
    try:
        client = _redis()
        keys = sorted(client.scan_iter(match=_key("*"), count=100))
        values = client.mget(keys) if keys else []
    except (redis.RedisError, OSError):
        return {}
    reports = {}
    for raw in values:
        if raw is None:
            continue
        try:
            report = json.loads(raw)
            reports[str(report["name"])] = report
        except (ValueError, KeyError, TypeError):
            continue
    return reports


def _worker_degraded(report: dict, now: float) -> Degraded | None:
    name = report["name"]
    silent_s = now - float(report.get("at", 0))
    if silent_s > settings.WORKER_SILENT_AFTER_S:
        return Degraded(name, "silent", f"The {name} has not reported for {silent_s:.0f} s.")
    if not report.get("connected", True):
        return Degraded(name, "down", f"The {name} cannot reach Kafka.")
    progress_age = float(report.get("progress_age_s") or 0)
    if (report.get("lag") or 0) > 0 and progress_age > settings.CONSUMER_STALLED_AFTER_S:
        return Degraded(
            name,
            "stalled",
            f"The {name} has {report['lag']} records to read and has made no progress "
            f"for {progress_age:.0f} s.",
            progress_age,
        )
    return None


def platform_status() -> dict:
    """The degraded parts (empty when all is well) and the workers' reports."""
    now = time.time()
    reports = worker_reports()
    degraded = [found for r in reports.values() if (found := _worker_degraded(r, now))]
    for check in _checks:
        try:
            degraded += check()
        except Exception:  # noqa: BLE001 - a failing check must not hide the others
            logger.warning("status: check %s failed", check.__name__, exc_info=True)
    return {"degraded": [asdict(d) for d in degraded], "workers": reports}
