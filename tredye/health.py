"""`/healthz` says the process is up; `/readyz` says whether its dependencies answer."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from tredye import kafka, status

logger = logging.getLogger(__name__)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _postgres() -> bool:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        logger.warning("readyz: PostgreSQL unreachable", exc_info=True)
        connection.close_if_unusable_or_obsolete()
        return False


def _redis() -> bool:
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        logger.warning("readyz: Redis unreachable")
        return False


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {
        "postgres": _postgres(),
        "redis": _redis(),
        "kafka": kafka.reachable(timeout_s=2.0),
    }
    ready = all(checks.values())
    platform = status.platform_status() if checks["postgres"] else {"degraded": [], "workers": {}}
    # Degraded is still ready (200): this process serves, and taking every web process out of
    # a load balancer because the matcher lags would only hide the queue from traders.
    body = {
        "status": ("degraded" if platform["degraded"] else "ready") if ready else "unavailable",
        "checks": {name: "ok" if ok else "unreachable" for name, ok in checks.items()},
        "degraded": platform["degraded"],
        "workers": platform["workers"],
    }
    return JsonResponse(body, status=200 if ready else 503)
