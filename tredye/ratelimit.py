"""Request limits counted in Redis, so they hold across every web process.

A fixed one-second window per key: one pipelined INCR + EXPIRE per request. With Redis away
the limit is not applied (one warning a minute) rather than refusing every request: Redis
holds no money, and an outage of it must not stop trading (docs/architecture.md §7).
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from tredye.redis_clients import redis_client

logger = logging.getLogger(__name__)

_warned_at = 0.0
# A request waits at most this long for Redis before the limit is skipped.
_TIMEOUT_S = 0.5


def per_second(name: str, key: object, limit: int) -> bool:
    """Count one request of `key` in this second; False when it is past `limit` (0: no limit)."""
    if limit <= 0:
        return True
    second = int(time.time())
    counter = f"{settings.KAFKA_TOPIC_PREFIX}rate:{name}:{key}:{second}"
    try:
        pipe = redis_client(timeout_s=_TIMEOUT_S).pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 2)
        count, _ = pipe.execute()
    except (redis.RedisError, OSError) as error:
        global _warned_at  # noqa: PLW0603 - one warning a minute per process
        if time.monotonic() - _warned_at > 60:
            _warned_at = time.monotonic()
            logger.warning("rate limit %s not applied: Redis unavailable (%s)", name, error)
        return True
    return int(count) <= limit
