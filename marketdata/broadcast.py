"""The one door from sync code to the channel layer (Redis), and to the snapshot cache.

`async_to_sync(group_send)` would start a new event loop on every call, and the pub/sub
layer keeps its Redis connections per event loop, so every call would reconnect and
re-subscribe. Sync workers instead share one long-lived loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from marketdata.channels import STATUS_GROUP, group_name
from marketdata.selectors import snapshot_key, status_key

logger = logging.getLogger(__name__)

STATUS_TTL_S = 5


class Broadcaster:
    """Publish stream messages to channel-layer groups from synchronous code."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="broadcast", daemon=True
        )
        self._thread.start()
        self._layer = get_channel_layer()
        self._redis = self._call(self._connect())

    async def _connect(self) -> aioredis.Redis:
        return aioredis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)

    def _call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def publish(self, messages: dict[str, dict]) -> None:
        """Send each channel's message to its group (one send per group) and keep it as the
        channel's snapshot.

        Raises redis / OSError when Redis is unreachable; callers log and carry on.
        """
        self._call(self._publish(messages))

    async def _publish(self, messages: dict[str, dict]) -> None:
        # Each message is serialised to JSON once, here; sockets splice the text into frames.
        texts = {c: json.dumps(m, separators=(",", ":")) for c, m in messages.items()}
        sent_at = time.time()  # lets a socket that has fallen behind see it and conflate
        groups: dict[str, dict[str, str]] = defaultdict(dict)
        for channel, text in texts.items():
            groups[group_name(channel)][channel] = text
        await asyncio.gather(
            *(
                self._layer.group_send(
                    group, {"type": "stream.batch", "messages": batch, "at": sent_at}
                )
                for group, batch in groups.items()
            ),
            self._redis.hset(snapshot_key(), mapping=texts),
        )

    def publish_status(self, status: dict, *, changed: bool) -> None:
        """Keep the platform status where sockets read it (it expires unless refreshed, so a
        dead stream worker shows as down), and tell every socket at once when it `changed`."""
        self._call(self._publish_status(status, changed))

    async def _publish_status(self, status: dict, changed: bool) -> None:
        await self._redis.set(status_key(), json.dumps(status), ex=STATUS_TTL_S)
        if changed:
            await self._layer.group_send(STATUS_GROUP, {"type": "status.message", "status": status})

    def close(self) -> None:
        try:
            self._call(self._redis.aclose())
            self._call(self._layer.flush())
        except Exception:  # noqa: BLE001 - closing after a failure must not mask it
            logger.debug("broadcaster close failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
