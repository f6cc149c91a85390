"""The matcher's Kafka loop: it consumes the `orders` topic by manual partition assignment,
each partition from checkpoint + 1 if the checkpoint belongs to this very topic, else from its
start; runs batches on `Matcher`; relays their events after commit."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from trading.matching.commands import (
    Command,
    command_decode,
)
from trading.matching.matcher import Matcher
from trading.matching.store import BatchResult, checkpoint_write
from trading.messages import EVENT_TOPICS
from trading.outbox import Lanes, Relay, outbox_id
from tredye import db, kafka
from tredye.kafka import EnvelopeError
from tredye.workers import KafkaWorker

logger = logging.getLogger(__name__)

# Plans by key only, whatever the tables' size when first planned (see
# tredye.db.planner_settings_set): every statement of the matcher finds its rows by key.
PLANNER_SETTINGS = (
    "enable_seqscan = off",
    "enable_hashjoin = off",
    "enable_mergejoin = off",
)


class MatcherWorker(KafkaWorker):
    """Consume `orders` from checkpoint + 1, run batches, relay their events after commit."""

    name = "matcher"
    topics = (kafka.ORDERS,)
    start_at = "earliest"

    def __init__(self, *, partitions: list[int] | None = None, batch_size: int | None = None):
        super().__init__()
        self.only_partitions = partitions
        self.batch_size = batch_size or settings.MATCHER_BATCH_SIZE
        self.poll_timeout_ms = settings.MATCHER_POLL_TIMEOUT_MS
        self.matcher = Matcher()
        self.relay = Relay(topics=EVENT_TOPICS)
        self.lanes: Lanes | None = None
        self.batches = 0
        self.commands = 0
        self.last_relay_drain = 0.0

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    self._start()
                    super().run()
                    return
                except DatabaseError as error:
                    delay = self.backoff.next_delay()
                    logger.warning("matcher: database error (%s); retrying in %.1fs", error, delay)
                    self._stop_lanes()
                    self.stop_event.wait(delay)
        finally:
            self._stop_lanes()
            self.relay.close()
            logger.info("matcher: %d batches, %d commands", self.batches, self.commands)

    def _start(self) -> None:
        close_old_connections()
        # On the connection of the thread that runs the loop (Django's are per thread).
        db.planner_settings_set(PLANNER_SETTINGS)
        if self.lanes is None:
            self.lanes = Lanes()
            for topic in EVENT_TOPICS:
                self.lanes.acquire(topic, wait=True)
        kafka.ensure_topics(EVENT_TOPICS + (kafka.DEAD_LETTER,))
        self.relay.recovered.clear()
        self.relay.drain()
        self.matcher.reset()

    def _stop_lanes(self) -> None:
        if self.lanes is not None:
            try:
                self.lanes.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("matcher: lane connection already gone")
            self.lanes = None

    def on_consume(self) -> None:
        # Rebuilding the consumer re-reads from the checkpoint, so drop in-memory state too.
        self.matcher.reset()

    def assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        """Read each partition from its checkpoint + 1 if the checkpoint belongs to this very
        topic; otherwise (a broker that came back empty, a topic created again, a checkpoint
        kept before topic ids were) from the beginning: commands applied before are skipped by
        their outbox id, so nothing is applied twice and nothing is skipped."""
        physical = kafka.topic(kafka.ORDERS)
        ids = consumer.partitions_for_topic(physical)
        if not ids:
            raise KafkaError(f"no partitions for {physical}")
        wanted = sorted(ids) if self.only_partitions is None else self.only_partitions
        partitions = [TopicPartition(physical, p) for p in wanted if p in ids]
        consumer.assign(partitions)
        current = kafka.topic_id(consumer, physical)
        self.matcher.topic_id = current
        self.assigned_topic_ids = {physical: current}
        stored = self.matcher.checkpoints_with_ids()
        starts = {}
        for tp in partitions:
            offset, topic_id = stored.get(tp.partition, (None, ""))
            # No id from the broker (before Kafka 2.8): the checkpoint is trusted.
            if offset is not None and (not current or topic_id == current):
                consumer.seek(tp, offset + 1)
                starts[tp.partition] = offset + 1
            else:
                if offset is not None:
                    logger.warning(
                        "matcher: %s[%d] is not the topic of checkpoint %d (topic id %r, "
                        "now %r): reading it from the start; applied commands are skipped",
                        physical,
                        tp.partition,
                        offset,
                        topic_id,
                        current,
                    )
                consumer.seek_to_beginning(tp)
                starts[tp.partition] = 0
        logger.info("matcher: partitions %s from offsets %s", wanted, starts)
        return partitions

    def decode_record(self, record: Any) -> Command:
        """The command of one record; one that is not a command is dead-lettered here and
        becomes a "skip", so that its offset is still checkpointed with its batch."""
        try:
            command = command_decode(record.value)
        except EnvelopeError as error:
            self.dead_letter(record, str(error))
            command = Command("skip", "", 0)
        command.partition = record.partition
        command.offset = record.offset
        command.record = record
        command.outbox_id = outbox_id(record)
        return command

    def handle(self, items: list[Command]) -> None:
        for start in range(0, len(items), self.batch_size):
            self._run(items[start : start + self.batch_size])

    def _run(self, commands: list[Command]) -> None:
        try:
            result = self.matcher.run_batch(commands)
        except DatabaseError:
            raise
        except Exception:
            # The books may be ahead of PostgreSQL now: rebuild, and find the poison command.
            logger.exception("matcher: batch of %d failed; retrying one by one", len(commands))
            close_old_connections()
            self.matcher.reset()
            for command in commands:
                try:
                    self._dead_letters(self.matcher.run_batch([command]))
                except DatabaseError:
                    raise
                except Exception as error:  # noqa: BLE001 - dead-letter whatever fails alone
                    logger.exception("matcher: command at offset %s failed", command.offset)
                    self.matcher.reset()
                    self.dead_letter(command.record, f"matcher error: {error}")
                    self._checkpoint_only([command])
        else:
            self._dead_letters(result)
        self.batches += 1
        self.commands += len(commands)
        # One send of at most 5,000 rows: a backlog (a topic that lost its history gets every
        # trade again) goes out between batches instead of holding the commands up.
        self.relay.drain(rounds=1)

    def _dead_letters(self, result: BatchResult) -> None:
        for record, reason in result.dead:
            self.dead_letter(record, reason)

    def _checkpoint_only(self, commands: list[Command]) -> None:
        """Record dead-lettered commands as done: checkpoint and outbox ids, nothing else."""
        last: dict[int, int] = {}
        for command in commands:
            last[command.partition] = max(last.get(command.partition, -1), command.offset)
        checkpoint_write(
            topic=self.matcher.topic,
            topic_id=self.matcher.topic_id,
            now=timezone.now(),
            applied=[c.outbox_id for c in commands if c.outbox_id is not None],
            checkpoints=last,
        )

    def tick(self, now: float) -> None:
        # While idle too: relays events a failed produce left behind, and sees a topic that
        # came back empty (which then gets its history again).
        if now - self.last_relay_drain >= 1.0:
            self.last_relay_drain = now
            self.relay.drain(rounds=1)
