"""The outbox relay's loop: produce committed order commands, and the matcher's events when no
matcher is there to relay them (it died after a commit).

It holds the `orders` lane for as long as it runs and takes the event lanes only to send rows
the matcher left behind. Any broker or database error drops the producers and the lanes,
backs off and starts over. What a row's trip to Kafka guarantees is `trading/outbox.py`'s.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from kafka.errors import KafkaError

from trading.messages import EVENT_TOPICS
from trading.outbox import Lanes, Relay
from tredye import kafka
from tredye.workers import Backoff, Worker

logger = logging.getLogger(__name__)
ORPHAN_CHECK_EVERY_S = 1.0
ORPHAN_AFTER_S = 3.0
CONNECTION_CHECK_EVERY_S = 1.0
RELAY_BATCH = 5000
IDLE_WAIT_S = 1.0


class OutboxRelay(Worker):
    """Send unsent outbox rows to Kafka until stopped."""

    name = "relay"

    def __init__(self) -> None:
        super().__init__()
        self.interval = settings.OUTBOX_RELAY_INTERVAL_MS / 1000
        self.backoff = Backoff()
        self.orders = Relay(topics=[kafka.ORDERS])
        self.events = Relay(topics=list(EVENT_TOPICS), producer=None)
        self.lanes: Lanes | None = None
        self.last_orphan_check = self.last_connection_check = 0.0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._round()
            except (KafkaError, OSError, DatabaseError) as error:
                delay = self.backoff.next_delay()
                logger.warning("relay: %s; retrying in %.1fs", error, delay)
                self._reset()
                self.stop_event.wait(delay)
        self.orders.close()
        self.events.close()
        if self.lanes is not None:
            self.lanes.close()
        logger.info("relay: stopped after %d rows", self.orders.sent + self.events.sent)

    def _round(self) -> None:
        """Send what waits (the orphaned events at most once a second), then wait a little."""
        lanes = self.lanes
        if lanes is None:
            kafka.ensure_topics()
            lanes = self.lanes = Lanes()
            lanes.acquire(kafka.ORDERS, wait=True)
            lanes.listen()
            self.orders.recovered.clear()
            logger.info("relay: started")
        sent = self.orders.drain(limit=RELAY_BATCH)
        now = time.monotonic()
        if now - self.last_orphan_check >= ORPHAN_CHECK_EVERY_S:
            self.last_orphan_check = now
            # The matcher relays its own events; step in only for rows it left
            # behind (it died after a commit) while it is away.
            if self.events.backlog(older_than_s=ORPHAN_AFTER_S) and all(
                lanes.acquire(topic, wait=False) for topic in EVENT_TOPICS
            ):
                self.events.recovered.clear()
                sent += self.events.drain()
            for topic in EVENT_TOPICS:
                lanes.release(topic)
        self.backoff.reset()
        # At most once a second: with health checks on, each call costs the next query
        # a round trip (SELECT 1), and the loop runs every few milliseconds.
        if now - self.last_connection_check >= CONNECTION_CHECK_EVERY_S:
            self.last_connection_check = now
            close_old_connections()
        # Wait even after sending: the next drain then takes every row committed
        # meanwhile in one produce, one flush and one UPDATE (a full batch, i.e. a
        # backlog, goes on at once). With nothing sent, sleep until a command is
        # committed (NOTIFY), and at least once a second for the checks above.
        if sent >= RELAY_BATCH:
            return
        if sent:
            self.stop_event.wait(self.interval)
        else:
            lanes.wait(IDLE_WAIT_S)

    def _reset(self) -> None:
        """New producers and a new tail read: the broker may be another one now."""
        self.orders.close()
        self.events.close()
        self.orders.recovered.clear()
        if self.lanes is not None:
            try:
                self.lanes.close()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                logger.debug("relay: lane connection already gone")
            self.lanes = None
        close_old_connections()
