"""The outbox relay: produce committed outbox rows to Kafka exactly once per row.

One sender per topic at a time (a PostgreSQL advisory lock per topic, the "lane"). Each record
carries its outbox id in a header. A row is marked sent, and the partition's cursor advanced,
only after the broker acknowledged it. A new holder of a lane first reads its topic's tail from
the cursors (never `end_offsets()`), marks every row it finds there as sent, and only then sends
the rest: so a crash between produce and mark-sent never sends a row twice.
See docs/decisions/0004-order-path-exactly-once.md.
"""

from __future__ import annotations

import datetime
import logging
import time
import zlib
from collections.abc import Iterable, Sequence

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

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
    return psycopg.conninfo.make_conninfo(**parts)


class Lanes:
    """Session advisory locks, one per topic, on a connection of their own.

    The locks go with the connection: when the process dies, PostgreSQL frees them.
    """

    def __init__(self) -> None:
        self.conn = psycopg.connect(database_dsn(), autocommit=True)
        self.held: set[str] = set()

    def _key(self, topic: str) -> int:
        return zlib.crc32(f"{settings.KAFKA_TOPIC_PREFIX}{topic}".encode()) - 2**31

    def acquire(self, topic: str, *, wait: bool) -> bool:
        if topic in self.held:
            return True
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        row = self.conn.execute(
            f"SELECT {function}(%s, %s)::text",  # noqa: S608 - one of two constant names
            [LANE_LOCK_NAMESPACE, self._key(topic)],
        ).fetchone()
        got = wait or (row is not None and row[0] == "true")
        if got:
            self.held.add(topic)
        return got

    def release(self, topic: str) -> None:
        if topic in self.held:
            self.conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [LANE_LOCK_NAMESPACE, self._key(topic)]
            )
            self.held.discard(topic)

    def close(self) -> None:
        self.conn.close()


def outbox_ids_on_topics(
    *, cursors: dict[str, dict[int, int]], idle_ms: int = 300, max_s: float = 60.0
) -> tuple[set[int], dict[str, dict[int, int]]]:
    """Read each partition of the given physical topics from its cursor to the end; return the
    outbox ids found and the last offset seen per topic and partition. The end is where nothing
    more arrives for `idle_ms` (the broker's end_offsets is not trusted)."""
    consumer = kafka.consumer(auto_offset_reset="earliest", max_poll_records=5000)
    found: set[int] = set()
    last: dict[str, dict[int, int]] = {}
    try:
        assigned = []
        for physical in cursors:
            partitions = consumer.partitions_for_topic(physical) or set()
            assigned += [TopicPartition(physical, p) for p in sorted(partitions)]
        if not assigned:
            return found, last
        consumer.assign(assigned)
        for tp in assigned:
            start = cursors[tp.topic].get(tp.partition)
            if start is None:
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
                    for name, value in record.headers or ():
                        if name == OUTBOX_ID_HEADER:
                            try:
                                found.add(int(value))
                            except ValueError:
                                continue
    finally:
        consumer.close()
    return found, last


class Relay:
    """Send the unsent outbox rows of some topics, each exactly once."""

    def __init__(self, *, topics: Sequence[str], producer: KafkaProducer | None = None) -> None:
        self.topics = list(topics)
        self._producer = producer
        self.recovered: set[str] = set()
        self.sent = 0

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = kafka.producer(linger_ms=1)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    def recover(self, topics: Sequence[str]) -> int:
        """Mark as sent every row of these topics already on Kafka; return how many."""
        physical = {kafka.topic(topic): topic for topic in topics}
        cursors: dict[str, dict[int, int]] = {name: {} for name in physical}
        for name, partition, offset in RelayCursor.objects.filter(topic__in=physical).values_list(
            "topic", "partition", "offset"
        ):
            cursors[name][partition] = offset
        found, last = outbox_ids_on_topics(cursors=cursors)
        marked = 0
        with transaction.atomic():
            if found:
                marked = Outbox.objects.filter(
                    pk__in=found, topic__in=topics, sent_at__isnull=True
                ).update(sent_at=timezone.now())
            for name, offsets in last.items():
                _cursors_save(name, offsets)
        if marked:
            logger.info("relay: %d rows of %s were already on Kafka", marked, ", ".join(topics))
        self.recovered.update(topics)
        return marked

    def drain(self, *, limit: int = 5000) -> int:
        """Send unsent rows (oldest first) until none is left; return how many were sent."""
        total = 0
        missing = [topic for topic in self.topics if topic not in self.recovered]
        if missing:
            self.recover(missing)
        while True:
            rows = self._unsent(limit)
            if not rows:
                return total
            self.send(rows)
            total += len(rows)
            if len(rows) < limit:
                return total

    def _unsent(self, limit: int) -> list[Outbox]:
        """The oldest unsent rows of these topics, in one plain query (no ORM compilation).

        `data` stays the JSON text PostgreSQL sends; `send` splices it into the envelope.
        """
        with connection.cursor() as cursor:
            cursor.execute(_UNSENT, [self.topics, limit])
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
                    cursor.execute(_MARK_SENT, [now, sent])
            _cursors_save_all(offsets, now)
        self.sent += len(sent)
        # What failed may still have reached the broker: read the tail again before resending.
        self.recovered -= failed
        if failed:
            raise KafkaError(f"produce failed on {', '.join(sorted(failed))}")


_OUTBOX_TABLE = Outbox._meta.db_table
_UNSENT = (
    f"SELECT id, topic, key, type, seq, ts, data::text FROM {_OUTBOX_TABLE} "  # noqa: S608 - constant
    "WHERE topic = ANY(%s) AND sent_at IS NULL ORDER BY id LIMIT %s"
)
_MARK_SENT = f"UPDATE {_OUTBOX_TABLE} SET sent_at = %s WHERE id = ANY(%s)"  # noqa: S608


def _cursors_save_all(offsets: dict[str, dict[int, int]], now: datetime.datetime) -> None:
    """Advance the cursor of every (physical topic, partition) in one statement."""
    rows = [
        (physical, partition, offset)
        for physical, last in offsets.items()
        for partition, offset in last.items()
    ]
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO trading_relaycursor (topic, partition, "offset", updated_at)
            SELECT t, p, o, %s FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS v(t, p, o)
            ON CONFLICT (topic, partition) DO UPDATE
               SET "offset" = GREATEST(trading_relaycursor."offset", EXCLUDED."offset"),
                   updated_at = EXCLUDED.updated_at
            """,
            [now, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
        )


def _cursors_save(physical_topic: str, last: dict[int, int]) -> None:
    if not last:
        return
    now = timezone.now()
    with connection.cursor() as cursor:
        for partition, offset in last.items():
            cursor.execute(
                """
                INSERT INTO trading_relaycursor (topic, partition, "offset", updated_at)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (topic, partition) DO UPDATE
                   SET "offset" = GREATEST(trading_relaycursor."offset", EXCLUDED."offset"),
                       updated_at = EXCLUDED.updated_at
                """,
                [physical_topic, partition, offset, now],
            )
