"""The stream worker: Kafka ticks in, conflated per channel, flushed to the channel layer.

Between two flushes only the latest message of each channel survives, so however fast ticks
arrive, each group gets at most one message per flush interval, and it is the newest one.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from django.db import close_old_connections
from redis.exceptions import RedisError

from marketdata.broadcast import Broadcaster
from tredye import kafka
from tredye.kafka import Envelope, EnvelopeError
from tredye.metrics import STREAM_LAG, STREAM_LAST_EVENT_AGE, WS_CONFLATED_DROPS
from tredye.status import platform_status
from tredye.workers import KafkaWorker

if TYPE_CHECKING:
    from prometheus_client import Counter

logger = logging.getLogger(__name__)

TICK_FIELDS = ("symbol", "bid", "ask", "last", "bid_size", "ask_size", "open", "change_pct")
STATUS_EVERY_S = 1.0
PROGRESS_EVERY_S = 10.0
DATABASE_DOWN = {"part": "database", "state": "down", "message": "The database is unreachable."}
# While Redis is away, try to publish this often; the conflator keeps each channel's latest.
REDIS_RETRY_S = 1.0


class Conflator:
    """Latest message per channel since the last drain, each stamped with a per-channel seq.

    A message replaced by a newer one of its channel before it was sent counts as a conflated
    drop (`tredye_ws_conflated_drops`, by the channel's kind).
    """

    def __init__(self) -> None:
        self._pending: dict[str, dict] = {}
        self._seq: dict[str, int] = {}
        self._drops: dict[str, Counter] = {}  # channel -> its kind's drop counter

    def add(self, channel: str, *, ts: int, data: dict) -> None:
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        if channel in self._pending:
            self._dropped(channel)
        self._pending[channel] = {"ch": channel, "seq": seq, "ts": ts, "data": data}

    def _dropped(self, channel: str) -> None:
        counter = self._drops.get(channel)
        if counter is None:
            counter = self._drops[channel] = WS_CONFLATED_DROPS.labels(channel.partition(".")[0])
        counter.inc()

    def drain(self) -> dict[str, dict]:
        pending, self._pending = self._pending, {}
        return pending

    def restore(self, drained: dict[str, dict]) -> None:
        """Put back what a failed flush drained, where nothing newer has arrived since."""
        for channel, message in drained.items():
            if channel in self._pending:
                self._dropped(channel)  # a newer one arrived meanwhile
            else:
                self._pending[channel] = message

    def __len__(self) -> int:
        return len(self._pending)


def validate_tick(envelope: Envelope) -> dict[str, str]:
    """Check a tick's payload; raise EnvelopeError when a field is missing or not a price."""
    data = envelope.data
    if envelope.type != "tick":
        raise EnvelopeError(f"unexpected type {envelope.type!r} on the ticks topic")
    for field in TICK_FIELDS:
        if not isinstance(data.get(field), str):
            raise EnvelopeError(f"tick field {field!r} missing or not a string")
    if data["symbol"] != envelope.key:
        raise EnvelopeError("tick symbol differs from the envelope key")
    for field in TICK_FIELDS[1:]:
        try:
            value = Decimal(data[field])
        except InvalidOperation:
            raise EnvelopeError(f"tick field {field!r} is not a number") from None
        if not value.is_finite():
            raise EnvelopeError(f"tick field {field!r} is not finite")
    return {field: data[field] for field in TICK_FIELDS}


class StreamWorker(KafkaWorker):
    """Consume ticks, conflate per symbol, flush every `flush_interval_ms` to Redis."""

    name = "stream"
    topics = (kafka.TICKS,)
    start_at = "latest"

    def __init__(
        self,
        *,
        flush_interval_ms: int,
        stale_after_s: float,
        broadcaster: Broadcaster | None = None,
    ) -> None:
        super().__init__()
        self.flush_interval_s = flush_interval_ms / 1000
        # Poll no longer than one flush interval so flushes keep their beat.
        self.poll_timeout_ms = max(1, flush_interval_ms)
        self.stale_after_s = stale_after_s
        self.broadcaster = broadcaster or Broadcaster()
        self.conflator = Conflator()
        self.last_flush = 0.0
        self.last_tick_at: float | None = None
        self.newest_event_ts: int | None = None  # epoch ms of the newest tick read
        self.last_status_at = 0.0
        self.status: dict = {}
        self.flushes = 0
        self.published = 0
        self.redis_ok = True
        self.redis_retry_at = 0.0
        self.progress_at = time.monotonic()
        self.progress_consumed = self.progress_flushes = self.progress_published = 0

    def decode(self, raw: bytes | None) -> tuple[str, int, dict[str, str]]:
        envelope = kafka.decode(raw)
        return f"ticker.{envelope.key}", envelope.ts, validate_tick(envelope)

    def handle(self, items: list[tuple[str, int, dict[str, str]]]) -> None:
        newest = self.newest_event_ts or 0
        for channel, ts, data in items:
            self.conflator.add(channel, ts=ts, data=data)
            newest = max(newest, ts)
        self.newest_event_ts = newest or None
        self.last_tick_at = time.monotonic()

    def tick(self, now: float) -> None:
        if (
            self.conflator
            and now - self.last_flush >= self.flush_interval_s
            and now >= self.redis_retry_at
        ):
            self.flush(now)
        if now - self.last_status_at >= STATUS_EVERY_S:
            self.report_status(now)
        if now - self.progress_at >= PROGRESS_EVERY_S:
            self.report_progress(now)

    def report_progress(self, now: float) -> None:
        """Log what the worker has done since the last report."""
        elapsed = now - self.progress_at
        consumed = self.consumed - self.progress_consumed
        logger.info(
            "stream: %d ticks in %.0fs (%.1f/s), %d flushes, %d updates published, "
            "%d dead-lettered in all",
            consumed,
            elapsed,
            consumed / elapsed,
            self.flushes - self.progress_flushes,
            self.published - self.progress_published,
            self.dead_lettered,
        )
        self.progress_at = now
        self.progress_consumed = self.consumed
        self.progress_flushes = self.flushes
        self.progress_published = self.published

    def flush(self, now: float) -> None:
        messages = self.conflator.drain()
        self.last_flush = now
        try:
            self.broadcaster.publish(messages)
        except (RedisError, OSError, TimeoutError) as error:
            # Redis away: keep consuming and conflating; retry in a while with each channel's
            # newest message, so a Redis that returns empty gets every snapshot back.
            self.conflator.restore(messages)
            self.redis_retry_at = now + REDIS_RETRY_S
            if self.redis_ok:
                logger.warning(
                    "stream: channel layer unavailable (%s); still consuming, conflating and "
                    "retrying every %.0f s",
                    error,
                    REDIS_RETRY_S,
                )
            self.redis_ok = False
            return
        if not self.redis_ok:
            logger.info("stream: channel layer back; publishing again")
        self.redis_ok = True
        self.flushes += 1
        self.published += len(messages)

    def _publish_report(self, now: float) -> None:
        """The base report (tredye.status), and the same figures as metrics: lag (while
        known) and the age of the newest tick read, by its own time."""
        super()._publish_report(now)
        topic = kafka.TICKS
        if self.lag is not None:
            STREAM_LAG.labels(topic).set(self.lag)
        if self.newest_event_ts is not None:
            age = max(0.0, time.time() - self.newest_event_ts / 1000)
            STREAM_LAST_EVENT_AGE.labels(topic).set(age)

    def on_connection_change(self, connected: bool) -> None:
        self.report_status(time.monotonic())

    def report_status(self, now: float) -> None:
        """Publish what the browser should show: Kafka reachable, feed live or stale."""
        fresh = self.last_tick_at is not None and now - self.last_tick_at < self.stale_after_s
        status = {
            "kafka": "up" if self.connected else "down",
            "feed": "live" if (self.connected and fresh) else "stale",
            "degraded": self._degraded(),
        }
        self.last_status_at = now
        try:
            self.broadcaster.publish_status(status, changed=status != self.status)
        except (RedisError, OSError, TimeoutError):
            return
        if status != self.status:
            logger.info("stream: status %s", status)
            self.status = status

    def _degraded(self) -> list[dict]:
        """The platform's degraded parts, as the page shows them (without their changing age,
        so an unchanged state is not sent again every second)."""
        try:
            parts = platform_status()["degraded"]
        except Exception:  # noqa: BLE001 - the database may be away: say that instead
            logger.debug("stream: platform status unavailable", exc_info=True)
            close_old_connections()
            return [
                {"part": "database", "state": "down", "message": "The database is unreachable."}
            ]
        return [{key: part[key] for key in ("part", "state", "message")} for part in parts]

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.broadcaster.close()
