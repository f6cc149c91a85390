"""The stream worker's door to Redis, and the one shape of what goes through it.

Every flush is ONE Redis PUBLISH on `channels.pubsub_channel()`, read by one subscription per
web process (`marketdata.hub`), never by each socket. Its payload is lines: the first is the
worker's send time (epoch seconds), each other `KEY TEXT`, where KEY is a channel key
(`channels.py`) and TEXT the message's JSON, encoded once here and spliced unchanged into
every socket's frame. In the same MULTI the snapshot of each public key is written to a Redis
hash, so a web process that starts watching a channel reads a snapshot that the updates it
receives next continue exactly.
"""

from __future__ import annotations

import json
import logging
import time

import redis
from django.conf import settings

from marketdata.channels import STATUS_KEY, pubsub_channel
from marketdata.selectors import snapshot_key, status_key

logger = logging.getLogger(__name__)

STATUS_TTL_S = 5


def flush_payload(messages: dict[str, str], *, at: float | None = None) -> str:
    """The PUBLISH payload of one flush: key -> message text."""
    lines = [repr(time.time() if at is None else at)]
    lines += [f"{key} {text}" for key, text in messages.items()]
    return "\n".join(lines)


def payload_parse(payload: str) -> tuple[float, dict[str, str]]:
    """(send time, key -> text) of a flush payload; ValueError when it is not one."""
    first, _, rest = payload.partition("\n")
    at = float(first)
    messages = {}
    for line in rest.split("\n") if rest else ():
        key, space, text = line.partition(" ")
        if not space or not key:
            raise ValueError("a line of the flush is not KEY TEXT")
        messages[key] = text
    return at, messages


class Broadcaster:
    """Publish flushes and the platform status from synchronous code (the stream worker)."""

    def __init__(self) -> None:
        self._redis = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        self.channel = pubsub_channel()

    def publish(self, messages: dict[str, str], snapshots: dict[str, str]) -> None:
        """Send one flush to every web process and keep `snapshots` (key -> text) as the
        public channels' snapshots, in one MULTI. Raises redis / OSError when Redis is
        unreachable; the worker keeps what it could not send and retries."""
        pipe = self._redis.pipeline(transaction=True)
        if snapshots:
            pipe.hset(snapshot_key(), mapping=dict(snapshots))  # type: ignore[arg-type]
        pipe.publish(self.channel, flush_payload(messages))
        pipe.execute()

    def publish_status(self, status: dict, *, changed: bool) -> None:
        """Keep the platform status where sockets read it (it expires unless refreshed, so a
        dead stream worker shows as down), and tell every socket at once when it `changed`."""
        text = json.dumps(status, separators=(",", ":"))
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(status_key(), text, ex=STATUS_TTL_S)
        if changed:
            pipe.publish(self.channel, flush_payload({STATUS_KEY: text}))
        pipe.execute()

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001 - closing after a failure must not mask it
            logger.debug("broadcaster close failed", exc_info=True)
