"""The outbox relay: produce committed outbox rows to Kafka exactly once per row.

One sender per topic at a time (a PostgreSQL advisory lock per topic, the "lane"). Each record
carries its outbox id in a header. A row is marked sent, and the partition's cursor advanced,
only after the broker acknowledged it. A new holder of a lane first reads its topic's tail from
the cursors (never `end_offsets()`), marks every row it finds there as sent, and only then sends
the rest: so a crash between produce and mark-sent never sends a row twice.
See docs/decisions/0004-order-path-exactly-once.md.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django import db as django_db
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from trading import sql
from trading.models import Outbox, RelayCursor
from tredye import kafka

logger = logging.getLogger(__name__)

LANE_LOCK_NAMESPACE = zlib.crc32(b"tredye.trading.outbox-lane") - 2**31
OUTBOX_ID_HEADER = "outbox_id"


def database_dsn() -> str:
    """A libpq connection string for the default database (for lane locks)."""
    params = connection.get_connection_params()
    keys = ("host", "port", "dbname", "user", "password")
    parts = {key: params.get(key) for key in keys if params.get(key) not in (None, "")}
    return psycopg.conninfo.make_conninfo("", **parts)


def outbox_id(record: Any) -> int | None:
    """The outbox id a record was sent from (its header), or None."""
    for name, value in record.headers or ():
        if name == OUTBOX_ID_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


@contextlib.contextmanager
def _django_errors() -> Iterator[None]:
    """Raise a psycopg error on the lanes' own connection as Django's error of that kind."""
    try:
        yield
    except psycopg.Error as error:
        kind = getattr(django_db, type(error).__name__, None)
        if not (isinstance(kind, type) and issubclass(kind, django_db.DatabaseError)):
            kind = django_db.DatabaseError
        raise kind(str(error)) from error


class Lanes:
    """Session advisory locks, one per topic, on a connection of their own.

    The locks go with the connection: when the process dies, PostgreSQL frees them. Its errors
    are Django's (`OperationalError` and kin), so callers handle a lost connection here as any
    other database error: back off, then make a new `Lanes`.
    """

    def __init__(self) -> None:
        with _django_errors():
            self.conn = psycopg.connect(database_dsn(), autocommit=True)
        self.held: set[str] = set()

    def _key(self, topic: str) -> int:
        return zlib.crc32(f"{settings.KAFKA_TOPIC_PREFIX}{topic}".encode()) - 2**31

    def acquire(self, topic: str, *, wait: bool) -> bool:
        if topic in self.held:
            return True
        with _django_errors():
            row = self.conn.execute(
                sql.LANE_LOCK if wait else sql.LANE_TRY_LOCK,
                [LANE_LOCK_NAMESPACE, self._key(topic)],
            ).fetchone()
        got = wait or (row is not None and row[0] == "true")
        if got:
            self.held.add(topic)
        return got

    def listen(self) -> None:
        """Be woken by committed commands (the outbox trigger, migration 0006)."""
        with _django_errors():
            self.conn.execute(sql.LANE_LISTEN)

    def wait(self, timeout_s: float) -> bool:
        """Wait until a command is committed or `timeout_s` passes; return whether woken.
        Notifications that came meanwhile are taken together."""
        with _django_errors():
            return bool(list(self.conn.notifies(timeout=timeout_s, stop_after=1)))

    def release(self, topic: str) -> None:
        if topic in self.held:
            with _django_errors():
                self.conn.execute(sql.LANE_UNLOCK, [LANE_LOCK_NAMESPACE, self._key(topic)])
            self.held.discard(topic)

    def close(self) -> None:
        self.conn.close()


@dataclass
class TopicScan:
    """What a tail scan found: outbox ids, the last offset per topic and partition, each
    topic's id, and the topics whose cursors belonged to another topic (read from the start)."""

    found: set[int] = field(default_factory=set)
    last: dict[str, dict[int, int]] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)


def outbox_ids_on_topics(
    *,
    cursors: dict[str, dict[int, int]],
    cursor_ids: dict[str, str] | None = None,
    idle_ms: int = 1200,
    max_s: float = 120.0,
) -> TopicScan:
    """Read each partition of the given physical topics from its cursor to the end, and
    collect the outbox ids found there. The end is where nothing more arrives for `idle_ms`
    (the broker's end_offsets is not trusted).

    A topic whose id is not the one its cursors were kept for (`cursor_ids`; "" = unknown) is
    another topic (the broker came back empty, or it was created again): it is read from the
    start and reported in `replaced`. A cursor kept before ids were ("") counts as another
    topic once: the scan from the start finds what is there, so nothing is sent twice."""
    # A long wait: the local broker answers a fetch at the end of a long partition only after
    # scanning it, and answers empty if that takes longer than the wait; an empty answer here
    # would be taken for the end of the topic, and rows on it sent twice.
    consumer = kafka.consumer(
        auto_offset_reset="earliest", max_poll_records=5000, fetch_max_wait_ms=500
    )
    scan = TopicScan()
    found, last = scan.found, scan.last
    try:
        assigned = []
        for physical in cursors:
            partitions = consumer.partitions_for_topic(physical) or set()
            assigned += [TopicPartition(physical, p) for p in sorted(partitions)]
            current = scan.topic_ids[physical] = kafka.topic_id(consumer, physical)
            # No id from the broker (before Kafka 2.8): the cursors are trusted.
            if cursors[physical] and current and (cursor_ids or {}).get(physical) != current:
                scan.replaced.add(physical)
        if not assigned:
            return scan
        consumer.assign(assigned)
        for tp in assigned:
            start = cursors[tp.topic].get(tp.partition)
            if start is None or tp.topic in scan.replaced:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start + 1)
        deadline = time.monotonic() + max_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=50)
            if not batch:
                if (time.monotonic() - quiet_since) * 1000 >= idle_ms:
                    break
                continue
            quiet_since = time.monotonic()
            for tp, records in batch.items():
                seen = last.setdefault(tp.topic, {})
                for record in records:
                    seen[tp.partition] = max(seen.get(tp.partition, -1), record.offset)
                    found_id = outbox_id(record)
                    if found_id is not None:
                        found.add(found_id)
    finally:
        consumer.close()
    return scan


class Relay:
    """Send the unsent outbox rows of some topics, each exactly once."""

    def __init__(self, *, topics: Sequence[str], producer: KafkaProducer | None = None) -> None:
        self.topics = list(topics)
        self._producer = producer
        self.recovered: set[str] = set()
        self.sent = 0
        # Each topic's id as last recovered (physical name -> id; "" = unknown).
        self.topic_ids: dict[str, str] = {}
        self.last_identity_check = 0.0
        self.last_resend_check = 0.0

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = kafka.producer(linger_ms=1)
        return self._producer

    def close(self) -> None:
        """Drop the producer (after any produce error too); the next send builds a new one."""
        kafka.producer_discard(self._producer)
        self._producer = None

    def recover(self, topics: Sequence[str]) -> int:
        """Make the outbox agree with what is on Kafka before sending; return rows marked sent.

        Rows found on a topic's tail (past the cursors) are marked sent. A topic that is not
        the one the cursors were kept for (a broker that came back empty, a topic created
        again) gets again what it must hold (`_to_send_again`), minus what is already on the
        new topic; so each row is on it at most once, and every trade exactly once."""
        physical = {kafka.topic(topic): topic for topic in topics}
        cursors: dict[str, dict[int, int]] = {name: {} for name in physical}
        cursor_ids: dict[str, str] = {}
        for name, partition, offset, topic_id in RelayCursor.objects.filter(
            topic__in=physical
        ).values_list("topic", "partition", "offset", "topic_id"):
            cursors[name][partition] = offset
            cursor_ids[name] = topic_id
        scan = outbox_ids_on_topics(cursors=cursors, cursor_ids=cursor_ids)
        marked = 0
        now = timezone.now()
        with transaction.atomic():
            for name in sorted(scan.replaced):
                count = _to_send_again(physical[name], now).update(sent_at=None)
                RelayCursor.objects.filter(topic=name).delete()
                logger.warning(
                    "relay: %s is a new topic (id %r, cursors kept for %r): sending %d rows again",
                    name,
                    scan.topic_ids.get(name),
                    cursor_ids.get(name),
                    count,
                )
            if scan.found:
                marked = Outbox.objects.filter(
                    pk__in=scan.found, topic__in=topics, sent_at__isnull=True
                ).update(sent_at=now)
            _cursors_save(scan.last, scan.topic_ids, now)
        if marked:
            logger.info("relay: %d rows of %s were already on Kafka", marked, ", ".join(topics))
        self.topic_ids.update(scan.topic_ids)
        self.recovered.update(topics)
        return marked

    def check_identity(self) -> None:
        """Recover again any topic whose id changed since it was recovered (seen through the
        producer's metadata, refreshed every KAFKA_METADATA_MAX_AGE_MS)."""
        if self._producer is None:
            return
        for topic in list(self.recovered):
            physical = kafka.topic(topic)
            current = kafka.topic_id(self._producer, physical)
            if current and current != self.topic_ids.get(physical):
                logger.warning("relay: %s has a new id (%r); recovering it", physical, current)
                self.recovered.discard(topic)

    def resend_lost(self, *, older_than_s: float) -> int:
        """Send again the commands acknowledged more than `older_than_s` ago and still not
        applied: the broker may have lost them (the matcher skips a duplicate)."""
        if kafka.ORDERS not in self.topics:
            return 0
        cutoff = timezone.now() - datetime.timedelta(seconds=older_than_s)
        count = Outbox.objects.filter(
            topic=kafka.ORDERS, applied_at__isnull=True, sent_at__lt=cutoff
        ).update(sent_at=None)
        if count:
            logger.warning(
                "relay: %d commands acknowledged over %.0f s ago are not applied; sending again",
                count,
                older_than_s,
            )
        return count

    def drain(self, *, limit: int = 5000, rounds: int | None = None) -> int:
        """Send unsent rows (oldest first) until none is left, or for at most `rounds` sends
        of `limit` rows; return how many were sent."""
        total = 0
        now = time.monotonic()
        if now - self.last_identity_check >= settings.OUTBOX_IDENTITY_CHECK_S:
            self.last_identity_check = now
            self.check_identity()
        if now - self.last_resend_check >= 1.0:
            self.last_resend_check = now
            self.resend_lost(older_than_s=settings.OUTBOX_RESEND_AFTER_S)
        missing = [topic for topic in self.topics if topic not in self.recovered]
        if missing:
            self.recover(missing)
        while rounds is None or rounds > 0:
            rows = self._unsent(limit)
            if not rows:
                return total
            self.send(rows)
            total += len(rows)
            if len(rows) < limit:
                return total
            if rounds is not None:
                rounds -= 1
        return total

    def _unsent(self, limit: int) -> list[Outbox]:
        """The oldest unsent rows of these topics, in one plain query (no ORM compilation).

        `data` stays the JSON text PostgreSQL sends; `send` splices it into the envelope.
        """
        with connection.cursor() as cursor:
            cursor.execute(sql.RELAY_UNSENT, [self.topics, limit])
            return [
                Outbox(id=pk, topic=topic, key=key, type=type_, seq=seq, ts=ts, data=data)
                for pk, topic, key, type_, seq, ts, data in cursor.fetchall()
            ]

    def backlog(self, *, older_than_s: float) -> bool:
        """Whether a row of these topics has waited unsent for longer than `older_than_s`."""
        cutoff = timezone.now() - datetime.timedelta(seconds=older_than_s)
        return Outbox.objects.filter(
            topic__in=self.topics, sent_at__isnull=True, created_at__lt=cutoff
        ).exists()

    def send(self, rows: Iterable[Outbox]) -> None:
        """Produce the rows in order, wait for the broker, then mark them sent."""
        try:
            futures = self._produce(rows)
        except KafkaError:
            self.close()
            self.recovered.clear()
            raise
        sent: list[int] = []
        offsets: dict[str, dict[int, int]] = {}
        failed: set[str] = set()
        for row, future in futures:
            try:
                metadata = future.get(timeout=0)
            except KafkaError as error:
                logger.warning("relay: produce of outbox row %s failed: %s", row.pk, error)
                failed.add(row.topic)
                continue
            sent.append(row.pk)
            per_topic = offsets.setdefault(metadata.topic, {})
            per_topic[metadata.partition] = max(
                per_topic.get(metadata.partition, -1), metadata.offset
            )
        # One transaction, two statements: every row marked sent, every cursor advanced.
        with transaction.atomic():
            now = timezone.now()
            if sent:
                with connection.cursor() as cursor:
                    cursor.execute(sql.RELAY_MARK_SENT, [now, sent])
            _cursors_save(offsets, self.topic_ids, now)
        self.sent += len(sent)
        # What failed may still have reached the broker: read the tail again before resending.
        self.recovered -= failed
        if failed:
            self.close()
            raise KafkaError(f"produce failed on {', '.join(sorted(failed))}")

    def _produce(self, rows: Iterable[Outbox]) -> list[tuple[Outbox, Any]]:
        producer = self.producer
        futures = []
        for row in rows:
            if isinstance(row.data, str):  # JSON text, as `_unsent` reads it
                value = kafka.encode_json(
                    type=row.type, key=row.key, seq=row.seq, ts=row.ts, data_json=row.data
                )
            else:
                value = kafka.encode(
                    type=row.type, key=row.key, seq=row.seq, data=row.data, ts=row.ts
                )
            future = producer.send(
                kafka.topic(row.topic),
                key=row.key.encode(),
                value=value,
                headers=[(OUTBOX_ID_HEADER, str(row.pk).encode())],
            )
            futures.append((row, future))
        producer.flush(timeout=30)
        return futures


def _to_send_again(topic: str, now: datetime.datetime) -> QuerySet[Outbox]:
    """What a new topic (one that lost the history of the old) must be sent again.

    `orders`: every command not applied yet. `trades`: every trade, the venue's record of
    them. `book` and `account-events`, read live from their end: what may not have reached
    a reader yet, the rows of the last OUTBOX_REPUBLISH_WINDOW_S (their whole history would
    grow without bound and be read by no one).
    """
    rows = Outbox.objects.filter(topic=topic, sent_at__isnull=False)
    if topic == kafka.ORDERS:
        return rows.filter(applied_at__isnull=True)
    if topic == kafka.TRADES:
        return rows
    window = datetime.timedelta(seconds=settings.OUTBOX_REPUBLISH_WINDOW_S)
    return rows.filter(created_at__gte=now - window)


def _cursors_save(
    offsets: dict[str, dict[int, int]], topic_ids: dict[str, str], now: datetime.datetime
) -> None:
    """Advance the cursor of every (physical topic, partition) in one statement, with the id
    of the topic it belongs to."""
    rows = [
        (physical, partition, offset, topic_ids.get(physical, ""))
        for physical, last in offsets.items()
        for partition, offset in last.items()
    ]
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(sql.RELAY_CURSORS_ADVANCE, [now, *([r[k] for r in rows] for k in range(4))])
