"""Run the outbox relay: produce committed order commands (and orphaned matcher events)."""

from __future__ import annotations

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from kafka.errors import KafkaError

from trading.matching.events import EVENT_TOPICS
from trading.outbox import Lanes, Relay
from tredye import kafka
from tredye.workers import Backoff, StopFlag

logger = logging.getLogger(__name__)
ORPHAN_CHECK_EVERY_S = 1.0
ORPHAN_AFTER_S = 3.0
CONNECTION_CHECK_EVERY_S = 1.0
RELAY_BATCH = 5000
IDLE_WAIT_S = 1.0


class Command(BaseCommand):
    help = (
        "Produce unsent outbox rows to Kafka: order commands always; the matcher's events when "
        "no matcher holds their lane (e.g. it died after a commit)."
    )

    def handle(self, *args: object, **options: object) -> None:
        stop = StopFlag()
        signal.signal(signal.SIGTERM, stop.set)
        signal.signal(signal.SIGINT, stop.set)
        interval = settings.OUTBOX_RELAY_INTERVAL_MS / 1000
        backoff = Backoff()
        orders = Relay(topics=[kafka.ORDERS])
        events = Relay(topics=list(EVENT_TOPICS), producer=None)
        lanes: Lanes | None = None
        last_orphan_check = last_connection_check = 0.0
        while not stop.is_set():
            try:
                if lanes is None:
                    kafka.ensure_topics()
                    lanes = Lanes()
                    lanes.acquire(kafka.ORDERS, wait=True)
                    lanes.listen()
                    orders.recovered.clear()
                    logger.info("relay: started")
                sent = orders.drain(limit=RELAY_BATCH)
                now = time.monotonic()
                if now - last_orphan_check >= ORPHAN_CHECK_EVERY_S:
                    last_orphan_check = now
                    # The matcher relays its own events; step in only for rows it left
                    # behind (it died after a commit) while it is away.
                    if events.backlog(older_than_s=ORPHAN_AFTER_S) and all(
                        lanes.acquire(topic, wait=False) for topic in EVENT_TOPICS
                    ):
                        events.recovered.clear()
                        sent += events.drain()
                    for topic in EVENT_TOPICS:
                        lanes.release(topic)
                backoff.reset()
                # At most once a second: with health checks on, each call costs the next query
                # a round trip (SELECT 1), and the loop runs every few milliseconds.
                if now - last_connection_check >= CONNECTION_CHECK_EVERY_S:
                    last_connection_check = now
                    close_old_connections()
                # Wait even after sending: the next drain then takes every row committed
                # meanwhile in one produce, one flush and one UPDATE (a full batch, i.e. a
                # backlog, goes on at once). With nothing sent, sleep until a command is
                # committed (NOTIFY), and at least once a second for the checks above.
                if sent >= RELAY_BATCH:
                    continue
                if sent:
                    stop.wait(interval)
                else:
                    lanes.wait(IDLE_WAIT_S)
            except (KafkaError, OSError, DatabaseError) as error:
                delay = backoff.next_delay()
                logger.warning("relay: %s; retrying in %.1fs", error, delay)
                # New producers and a new tail read: the broker may be another one now.
                orders.close()
                events.close()
                orders.recovered.clear()
                if lanes is not None:
                    try:
                        lanes.close()
                    except Exception:  # noqa: BLE001 - the connection may be gone already
                        logger.debug("relay: lane connection already gone")
                    lanes = None
                close_old_connections()
                stop.wait(delay)
        orders.close()
        events.close()
        if lanes is not None:
            lanes.close()
        logger.info("relay: stopped after %d rows", orders.sent + events.sent)
