"""The platform's Redis clients (worker reports, request limits): one per URL and timeout.

Made on first use and kept by the process. Keyed by `REDIS_URL` as it is at the call, so a test
that points it at another Redis gets a client for that one, and the first again after it.
"""

from __future__ import annotations

import redis
from django.conf import settings

_clients: dict[tuple[str, float], redis.Redis] = {}


def redis_client(*, timeout_s: float) -> redis.Redis:
    """The client for `REDIS_URL` whose connects and calls give up after `timeout_s`."""
    key = (settings.REDIS_URL, timeout_s)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            key[0], socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    return client
