"""The bases of the long-running processes: `Worker` for any loop, `KafkaWorker` for a loop
that reads Kafka (poll a batch, decode, handle, repeat).

`Worker` owns the one stop flag and its signal setup: SIGTERM or SIGINT stop the loop cleanly,
and a command only builds its worker, installs the handlers and runs it.
`KafkaWorker` adds what each Kafka loop would otherwise get wrong on its own: reconnecting with
exponential backoff and jitter, sending a poison record to the dead-letter topic without
stopping (and to the sinks apps register, `dead_letter_sink_register`: trading keeps a row
of each), and `close_old_connections()` between batches.
A concrete Kafka worker names its topics and implements `handle()` (and `tick()` for work
driven by the clock, such as flushing). Partitions are assigned by hand: these loops own all
partitions of their topics, so they never wait for a consumer-group rebalance.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import close_old_connections
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from tredye import kafka, status
from tredye.kafka import EnvelopeError

logger = logging.getLogger(__name__)
# The longest a worker lets a fetch wait when it does not keep up, and how long it stays
# caught up before it waits the configured time again (see _adapt_fetch_wait).
FETCH_WAIT_CAP_MS = 640
IDLE_WAIT_BACK_S = 30.0


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A record a worker could not handle, as it went to the dead-letter topic, and why."""

    worker: str
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    reason: str


DeadLetterSink = Callable[[DeadLetterRecord], object]  # what it returns is ignored
_dead_letter_sinks: list[DeadLetterSink] = []


def dead_letter_sink_register(sink: DeadLetterSink) -> None:
    """Also hand every dead-lettered record to `sink` (from an app's `ready()`: the platform
    imports no app). A sink that raises is logged and the worker goes on."""
    if sink not in _dead_letter_sinks:
        _dead_letter_sinks.append(sink)


class StopFlag:
    """A stop request that a signal handler may set.

    Not a threading.Event: its set() takes the lock its wait() holds, so a signal arriving
    while the main thread waits on it deadlocks the process (seen: SIGTERM ignored forever).
    """

    def __init__(self) -> None:
        self.stopped = False

    def set(self, *_: object) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped

    def wait(self, seconds: float) -> bool:
        """Sleep until stopped or `seconds` have passed; return whether stopped."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self.stopped


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, *, base_s: float = 0.2, cap_s: float = 10.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def reset(self) -> None:
        self.attempt = 0


class Worker:
    """A loop that runs until stopped; subclasses implement `run` and check `stop_event`."""

    name = "worker"

    def __init__(self) -> None:
        self.stop_event = StopFlag()

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM (respawn, systemd) and SIGINT (Ctrl-C); only from the main thread."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Run until `stop()`."""
        raise NotImplementedError


class KafkaWorker(Worker):
    """Consume the worker's topics forever; subclasses implement `handle`."""

    topics: Sequence[str] = ()
    start_at: Literal["latest", "earliest"] = "latest"
    poll_timeout_ms = 50
    # How long without a broker connection before the worker calls itself disconnected.
    disconnected_after_s = 2.0
    # How often the worker reports itself (tredye.status) and checks its topics' identity.
    report_every_s = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.connected = False
        self.backoff = Backoff()
        self._dead_letter_producer: KafkaProducer | None = None
        self.dead_lettered = 0
        self.consumed = 0
        # The broker's id of each assigned topic when it was assigned (see `kafka.topic_id`).
        self.assigned_topic_ids: dict[str, str] = {}
        self.last_progress = time.monotonic()
        self.lag: int | None = None
        self.consumed_at_report = 0
        self.lag_at_report = 0
        self.caught_up_since: float | None = None
        self.base_fetch_wait_ms = 0  # the consumer's configured wait, read when it is built

    # -- hooks for subclasses -------------------------------------------------------------
    def decode(self, raw: bytes | None) -> Any:
        """Turn one record's value into what `handle` takes; raise EnvelopeError if bad."""
        return kafka.decode(raw)

    def handle(self, items: list[Any]) -> None:
        """Act on a batch of decoded records."""
        raise NotImplementedError

    def decode_record(self, record: Any) -> Any:
        """Turn one record into what `handle` takes: by default its value through `decode`.
        Raise EnvelopeError to dead-letter it and leave it out."""
        return self.decode(record.value)

    def on_consume(self) -> None:
        """Called each time the consumer is built again (at start and after a broker error),
        before it is assigned: state kept per consumer starts over here."""

    def assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        """Assign the consumer its partitions and their start; return them. By default every
        partition of `topics`, from `start_at`."""
        partitions = []
        for name in self.topics:
            ids = consumer.partitions_for_topic(kafka.topic(name))
            if not ids:
                raise KafkaError(f"no partitions for {kafka.topic(name)}")
            partitions += [TopicPartition(kafka.topic(name), p) for p in sorted(ids)]
            self.assigned_topic_ids[kafka.topic(name)] = kafka.topic_id(consumer, kafka.topic(name))
        consumer.assign(partitions)
        if self.start_at == "latest":
            consumer.seek_to_end(*partitions)
        else:
            consumer.seek_to_beginning(*partitions)
        return partitions

    def tick(self, now: float) -> None:
        """Called after every poll, records or not, with `time.monotonic()`."""

    def on_connection_change(self, connected: bool) -> None:
        """Called when the broker connection is lost or regained."""

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        """Run until `stop()`; reconnect with backoff whenever the broker goes away."""
        logger.info("%s starting on %s", self.name, ", ".join(kafka.topic(t) for t in self.topics))
        while not self.stop_event.is_set():
            try:
                self._consume()
            except (KafkaError, OSError) as error:
                self._set_connected(False)
                self._publish_report(time.monotonic())
                self._close_dead_letter_producer()  # a new one after a broker error
                delay = self.backoff.next_delay()
                logger.warning(
                    "%s: broker unavailable (%s); retrying in %.1fs",
                    self.name,
                    error.__class__.__name__,
                    delay,
                )
                self.stop_event.wait(delay)
        self._close_dead_letter_producer()
        status.worker_forget(self.name)
        logger.info(
            "%s stopped after %d records (%d dead-lettered)",
            self.name,
            self.consumed,
            self.dead_lettered,
        )

    def _consume(self) -> None:
        self.on_consume()
        kafka.ensure_topics(self.topics)
        consumer = kafka.consumer(auto_offset_reset=self.start_at, bootstrap_timeout_ms=5000)
        try:
            self.base_fetch_wait_ms = consumer._fetcher.config["fetch_max_wait_ms"]  # noqa: SLF001
            partitions = self.assign(consumer)
            self._set_connected(True)
            self.backoff.reset()
            last_seen_connected = last_report = time.monotonic()
            while not self.stop_event.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                if batch:
                    self._process(batch)
                    self.last_progress = time.monotonic()
                    close_old_connections()
                now = time.monotonic()
                self.tick(now)
                if now - last_report >= self.report_every_s:
                    last_report = now
                    # Also between batches: a connection lost while idle (a status check runs
                    # every second) is replaced, not reused broken for good.
                    close_old_connections()
                    self._check_topics(consumer)
                    self._report(consumer, partitions, now)
                if _broker_connected(consumer):
                    last_seen_connected = now
                    self._set_connected(True)
                elif now - last_seen_connected > self.disconnected_after_s:
                    # Rebuild from scratch: a restarted broker may have lost topics and
                    # offsets, so topics are ensured and positions reset again.
                    raise KafkaError(f"lost connection to {len(partitions)} partitions")
        finally:
            consumer.close()

    def _check_topics(self, consumer: KafkaConsumer) -> None:
        """Rebuild when an assigned topic has a new id: the broker came back empty or the topic
        was created again, and positions on the old one mean nothing there."""
        for physical, known in self.assigned_topic_ids.items():
            current = kafka.topic_id(consumer, physical)
            if current and current != known:
                logger.warning(
                    "%s: topic %s was replaced (id %r, now %r); starting over on it",
                    self.name,
                    physical,
                    known,
                    current,
                )
                raise KafkaError(f"topic {physical} was replaced")

    def _report(
        self, consumer: KafkaConsumer, partitions: list[TopicPartition], now: float
    ) -> None:
        """Publish lag and the age of the last progress (tredye.status).

        Lag is the high watermark of the last fetch minus the position (never `end_offsets()`,
        which the local broker gets wrong); unknown until a fetch answered. A consumer with
        nothing to read is making progress by definition.
        """
        lag = 0
        known = False
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            known = True
            try:
                lag += max(0, highwater - consumer.position(tp, timeout_ms=0))
            except (KafkaError, TypeError):
                continue
        self.lag = lag if known else None
        if not lag:
            self.last_progress = now
        self._adapt_fetch_wait(consumer, lag, now)
        self._publish_report(now)

    def _publish_report(self, now: float) -> None:
        status.worker_report(
            self.name,
            lag=self.lag,
            progress_age_s=now - self.last_progress,
            connected=self.connected,
            consumed=self.consumed,
        )

    def _adapt_fetch_wait(self, consumer: KafkaConsumer, lag: int, now: float) -> None:
        """Wait longer for fetches while the consumer does not keep up with what waits.

        The local broker answers a fetch only after scanning the partition's batches, and
        answers empty when that takes longer than the fetch's wait: past ~15,000 batches the
        small wait we use (latency, since it never wakes a waiting fetch) starves a consumer,
        or lets it crawl. So when records waited at the last report and fewer than those were
        read since, the wait is quadrupled (up to FETCH_WAIT_CAP_MS); a fetch with records
        waiting returns once the scan is done, so a longer wait costs nothing then. After
        IDLE_WAIT_BACK_S fully caught up it returns to the configured wait (small: it is the
        latency of an idle consumer). Apache Kafka never gets here: its fetches return as soon
        as records are there. `make run`'s broker is rolled before partitions get that long.
        """
        config = consumer._fetcher.config  # noqa: SLF001 - kafka-python reads it per fetch
        wait = config["fetch_max_wait_ms"]
        read = self.consumed - self.consumed_at_report
        behind = self.lag_at_report > 0 and lag > 0 and read < self.lag_at_report
        self.consumed_at_report, self.lag_at_report = self.consumed, lag
        if lag:
            self.caught_up_since = None
        elif self.caught_up_since is None:
            self.caught_up_since = now
        if behind and wait < FETCH_WAIT_CAP_MS:
            config["fetch_max_wait_ms"] = min(FETCH_WAIT_CAP_MS, wait * 4)
            logger.warning(
                "%s: %d records waiting and only %d read in a second; fetch wait %d -> %d ms",
                self.name,
                lag,
                read,
                wait,
                config["fetch_max_wait_ms"],
            )
        elif (
            wait != self.base_fetch_wait_ms
            and self.caught_up_since is not None
            and now - self.caught_up_since >= IDLE_WAIT_BACK_S
        ):
            config["fetch_max_wait_ms"] = self.base_fetch_wait_ms
            logger.info(
                "%s: caught up; fetch wait back to %d ms", self.name, self.base_fetch_wait_ms
            )

    def _process(self, batch: dict) -> None:
        items = []
        for records in batch.values():
            for record in records:
                self.consumed += 1
                try:
                    items.append(self.decode_record(record))
                except EnvelopeError as error:
                    self.dead_letter(record, str(error))
        if items:
            self.handle(items)

    def dead_letter(self, record: object, reason: str) -> None:
        """Send a record that cannot be handled to the dead-letter topic, with why."""
        self.dead_lettered += 1
        source = f"{record.topic}[{record.partition}]@{record.offset}"  # type: ignore[attr-defined]
        logger.error("%s: dead-lettering %s: %s", self.name, source, reason)
        if self._dead_letter_producer is None:
            self._dead_letter_producer = kafka.producer()
        self._dead_letter_producer.send(
            kafka.topic(kafka.DEAD_LETTER),
            key=record.key,  # type: ignore[attr-defined]
            value=record.value,  # type: ignore[attr-defined]
            headers=[
                ("source", source.encode()),
                ("worker", self.name.encode()),
                ("error", reason.encode()[:1000]),
            ],
        )
        self._dead_letter_producer.flush(timeout=5)
        letter = DeadLetterRecord(
            worker=self.name,
            topic=record.topic,  # type: ignore[attr-defined]
            partition=record.partition,  # type: ignore[attr-defined]
            offset=record.offset,  # type: ignore[attr-defined]
            key=record.key,  # type: ignore[attr-defined]
            value=record.value,  # type: ignore[attr-defined]
            reason=reason,
        )
        for sink in _dead_letter_sinks:
            try:
                sink(letter)
            except Exception:  # noqa: BLE001 - a failing sink (PostgreSQL away) must not stop the loop
                logger.exception("%s: dead-letter sink %s failed for %s", self.name, sink, source)

    def _close_dead_letter_producer(self) -> None:
        kafka.producer_discard(self._dead_letter_producer)
        self._dead_letter_producer = None

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if connected:
                logger.info("%s: connected to Kafka", self.name)
            self.on_connection_change(connected)


def _broker_connected(consumer: KafkaConsumer) -> bool:
    # kafka-python reconnects by itself and never raises from poll() when the broker is gone,
    # so ask its client whether any known broker is connected.
    client = consumer._client  # noqa: SLF001 - the only way to see connection state
    return any(client.connected(broker.node_id) for broker in client.cluster.brokers())
