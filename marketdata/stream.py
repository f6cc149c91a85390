"""The stream worker: the market's events in from Kafka, one flush out to Redis every 16 ms.

It reads `ticks` (the reference market), `trades`, `book` and `account-events` (the
matcher's), keeps what the channels of docs/architecture.md §6 need (`marketdata.market_state`:
each book's levels, the latest trades, the candle builder, 24 h figures, the latest tick) and
every flush publishes what changed since the last one, as ONE message to every web process
(`marketdata.broadcast`). Between two flushes a ticker keeps only its latest value; a book
its latest quantity per level; trades, candles and account events are all kept.

PostgreSQL is the truth and Kafka the fast path: a book is loaded from the matcher's
committed levels (with the number of the last delta in them) and followed by its deltas; a
delta that skips a number (a record lost, a broker that came back empty, a start in the
middle) makes the worker load the book again, and trades it missed are read from the
database. So the worker needs no history on the topics, and after a restart its first flush
carries a snapshot of every book and tape, from which the web processes carry on.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from marketdata.broadcast import Broadcaster
from marketdata.market_state import MarketState, UnknownSymbolError
from marketdata.stream_state import levels_parse
from trading.messages import ACCOUNT_ORDERS, BOOK_DELTA, TRADE
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
        self._pending[channel] = {
            "ch": channel,
            "seq": seq,
            "ts": ts,
            "type": "snapshot",
            "data": data,
        }

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

    def __contains__(self, channel: str) -> bool:
        return channel in self._pending


def validate(topic: str, envelope: Envelope) -> Any:
    """Check a record's payload for its topic; raise EnvelopeError when it is not usable."""
    if topic == kafka.TICKS:
        return validate_tick(envelope)
    if topic == kafka.TRADES:
        return validate_trade(envelope)
    if topic == kafka.BOOK:
        return validate_book(envelope)
    if topic == kafka.ACCOUNT_EVENTS:
        return validate_account(envelope)
    raise EnvelopeError(f"no stream reads topic {topic!r}")


def validate_trade(envelope: Envelope) -> dict[str, Any]:
    data = envelope.data
    if envelope.type != TRADE:
        raise EnvelopeError(f"unexpected type {envelope.type!r} on the trades topic")
    if data.get("symbol") != envelope.key:
        raise EnvelopeError("trade symbol differs from the envelope key")
    if type(data.get("seq")) is not int or data["seq"] < 1:
        raise EnvelopeError("trade seq missing or not a positive integer")
    if type(data.get("ts")) is not int:
        raise EnvelopeError("trade ts missing or not an integer")
    if data.get("aggressor") not in ("buy", "sell"):
        raise EnvelopeError("trade aggressor is not buy or sell")
    kafka.positive_decimal(data, "price")
    kafka.positive_decimal(data, "quantity")
    return data


def validate_book(envelope: Envelope) -> dict:
    if envelope.type != BOOK_DELTA:
        raise EnvelopeError(f"unexpected type {envelope.type!r} on the book topic")
    if envelope.data.get("symbol") != envelope.key:
        raise EnvelopeError("book delta symbol differs from the envelope key")
    try:
        return levels_parse(envelope.data)
    except (ValueError, ArithmeticError) as error:
        raise EnvelopeError(f"book delta: {error}") from None


def validate_account(envelope: Envelope) -> dict[str, Any]:
    data = envelope.data
    if envelope.type != ACCOUNT_ORDERS:
        raise EnvelopeError(f"unexpected type {envelope.type!r} on the account-events topic")
    if str(data.get("account_id")) != envelope.key or type(data.get("account_id")) is not int:
        raise EnvelopeError("account event's account differs from the envelope key")
    orders, trades = data.get("orders"), data.get("trades")
    if not isinstance(orders, list) or not isinstance(trades, list):
        raise EnvelopeError("account event without lists of orders and trades")
    if not all(isinstance(o, dict) and type(o.get("id")) is int for o in orders):
        raise EnvelopeError("account event with an order that has no id")
    if not all(isinstance(t, dict) for t in trades):
        raise EnvelopeError("account event with a trade that is not an object")
    return data


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
    """Consume the market's topics, keep the channels' state, flush every `flush_interval_ms`."""

    name = "stream"
    topics = (kafka.TICKS, kafka.TRADES, kafka.BOOK, kafka.ACCOUNT_EVENTS)
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
        self.state = MarketState(self.conflator)
        self.last_flush = 0.0
        self.last_tick_at: float | None = None
        self.newest_event_ts: int | None = None  # epoch ms of the newest event read
        self.last_status_at = 0.0
        self.status: dict = {}
        self.flushes = 0
        self.published = 0
        self.redis_ok = True
        self.redis_retry_at = 0.0
        self.progress_at = time.monotonic()
        self.progress_consumed = self.progress_flushes = self.progress_published = 0
        self.logical: dict[str, str] = {}

    def on_consume(self) -> None:
        # A new consumer may start anywhere on topics that may have been replaced: every book
        # and tape is loaded again from PostgreSQL and sent whole at the next flush.
        self.logical = {kafka.topic(name): name for name in self.topics}
        self.state.forget()

    def decode_record(self, record: Any) -> tuple[str, Envelope, Any]:
        envelope = kafka.decode(record.value)
        topic = self.logical.get(record.topic, record.topic)
        return topic, envelope, validate(topic, envelope)

    def handle(self, items: list[tuple[str, Envelope, Any]]) -> None:
        newest = self.newest_event_ts or 0
        for topic, envelope, payload in items:
            try:
                if topic == kafka.TICKS:
                    self.state.tick(envelope.key, envelope.ts, payload)
                    self.last_tick_at = time.monotonic()
                elif topic == kafka.TRADES:
                    self.state.trade(envelope.key, payload)
                elif topic == kafka.BOOK:
                    self.state.book(envelope.key, envelope.seq, envelope.ts, payload)
                else:
                    self.state.account(int(envelope.key), envelope.seq, envelope.ts, payload)
            except UnknownSymbolError as error:
                logger.warning("stream: %s; record left out", error)
                continue
            except DatabaseError as error:
                # The book or tape could not be loaded: the record is left out, and the next
                # one of its symbol loads it (and what was left out) from the database.
                logger.warning("stream: database unavailable (%s); record left out", error)
                close_old_connections()
                continue
            newest = max(newest, envelope.ts)
        self.newest_event_ts = newest or None

    def tick(self, now: float) -> None:
        if (
            self.state.changed()
            and now - self.last_flush >= self.flush_interval_s
            and now >= self.redis_retry_at
        ):
            self.flush(now)
        self.state.save_candles(now)
        if now - self.last_status_at >= STATUS_EVERY_S:
            self.report_status(now)
        if now - self.progress_at >= PROGRESS_EVERY_S:
            self.report_progress(now)

    def report_progress(self, now: float) -> None:
        """Log what the worker has done since the last report."""
        elapsed = now - self.progress_at
        consumed = self.consumed - self.progress_consumed
        logger.info(
            "stream: %d records in %.0fs (%.1f/s), %d flushes, %d messages published, "
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
        self.last_flush = now
        try:
            messages, snapshots = self.state.drain()
        except DatabaseError as error:
            logger.warning("stream: database unavailable (%s); flush delayed", error)
            close_old_connections()
            self.redis_retry_at = now + REDIS_RETRY_S
            return
        try:
            self.broadcaster.publish(messages, snapshots)
        except (RedisError, OSError, TimeoutError) as error:
            # Redis away: keep consuming; when it answers again every channel is sent whole
            # (tickers their latest, books and tapes a snapshot), so a Redis that returns
            # empty, and every web process that lost its subscription, gets all of it back.
            self.state.resend_all()
            self.redis_retry_at = now + REDIS_RETRY_S
            if self.redis_ok:
                logger.warning(
                    "stream: Redis unavailable (%s); still consuming and retrying every %.0f s",
                    error,
                    REDIS_RETRY_S,
                )
            self.redis_ok = False
            return
        if not self.redis_ok:
            logger.info("stream: Redis back; publishing again")
        self.redis_ok = True
        self.flushes += 1
        self.published += len(messages)

    def _publish_report(self, now: float) -> None:
        """The base report (tredye.status), and the same figures as metrics: lag (while
        known) and the age of the newest event read, by its own time."""
        super()._publish_report(now)
        topic = kafka.TICKS
        if self.lag is not None:
            STREAM_LAG.labels(topic).set(self.lag)
        if self.newest_event_ts is not None:
            STREAM_LAST_EVENT_AGE.labels(topic).set(self.event_age_s() or 0.0)

    def event_age_s(self) -> float | None:
        if self.newest_event_ts is None:
            return None
        return max(0.0, time.time() - self.newest_event_ts / 1000)

    def on_connection_change(self, connected: bool) -> None:
        self.report_status(time.monotonic())

    def report_status(self, now: float) -> None:
        """Publish what the browser should show: Kafka reachable, feed live or stale, how far
        behind this worker is, and the platform's degraded parts."""
        fresh = self.last_tick_at is not None and now - self.last_tick_at < self.stale_after_s
        age = self.event_age_s()
        status = {
            "kafka": "up" if self.connected else "down",
            "feed": "live" if (self.connected and fresh) else "stale",
            "degraded": self._degraded(),
        }
        self.last_status_at = now
        # Lag and age change every second; only a change of the rest is announced.
        report = {**status, "lag": self.lag, "event_age_s": None if age is None else round(age, 1)}
        try:
            self.broadcaster.publish_status(report, changed=status != self.status)
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
            return [DATABASE_DOWN]
        return [{key: part[key] for key in ("part", "state", "message")} for part in parts]

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.broadcaster.close()
