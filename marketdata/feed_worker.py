"""The feed's loop: reference ticks, simulated or replayed (`marketdata/feed.py`), sent to the
`ticks` topic, with the last prices saved now and then for the next start.

PostgreSQL holds the instruments and the last prices; the ticks themselves only go to Kafka.
A database that is away delays the start and the saving of prices, never the feed: it backs
off and carries on (a process that exits stops the whole local venue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from marketdata import selectors, services
from marketdata.feed import FeedError, Quote, Simulator, read_replay, replay_schedule
from tredye.workers import Backoff, Worker

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_EVERY_S = 10.0
SAVE_EVERY_S = 2.0


class FeedWorker(Worker):
    """Publish ticks until stopped, until `count` ticks, or to the end of a replay.

    Bad arguments, an unknown symbol and a bad replay file raise FeedError, before any tick is
    sent; the messages name `run_feed`'s options. Progress lines go to `write`.
    """

    name = "feed"

    def __init__(
        self,
        *,
        rate: float | None = None,
        seed: int | None = None,
        time_scale: float = 600.0,
        symbols: Iterable[str] | None = None,
        replay: Path | None = None,
        speed: float = 1.0,
        loop: bool = False,
        count: int | None = None,
        write: Callable[[str], object] = print,
    ) -> None:
        super().__init__()
        self.rate = rate if rate is not None else settings.FEED_RATE
        if not self.rate > 0:
            raise FeedError("--rate must be a positive number of ticks per second")
        if not speed > 0:
            raise FeedError("--speed must be positive")
        if count is not None and count < 1:
            raise FeedError("--count must be at least 1")
        self.seed = seed
        self.time_scale = time_scale
        self.symbols = list(symbols) if symbols else None
        self.replay = replay
        self.speed = speed
        self.loop = loop
        self.count = count
        self.write = write
        self.backoff = Backoff()
        self.save_after = 0.0

    def run(self) -> None:
        if self.replay is not None:
            quotes = self._replayed(self.replay)
            mode = f"replaying {self.replay} at {self.speed}x"
        else:
            quotes = self._simulated()
            mode = f"simulating at {self.rate:g} ticks/s (seed {self.seed})"
        if quotes is None:
            return  # stopped while waiting for the database
        publisher = services.TickPublisher()
        self.write(f"feed: {mode} -> {publisher.topic}")
        try:
            self._publish(publisher, quotes)
        finally:
            publisher.close()

    def _until_read(self, read: Callable[[], T], what: str) -> T | None:
        """`read()`, retried with backoff while the database is unavailable; None if stopped."""
        while not self.stop_event.is_set():
            try:
                found = read()
            except DatabaseError as error:
                delay = self.backoff.next_delay()
                logger.warning(
                    "feed: database error reading %s (%s); retrying in %.1fs",
                    what,
                    str(error).strip(),
                    delay,
                )
                close_old_connections()
                self.stop_event.wait(delay)
            else:
                self.backoff.reset()
                return found
        return None

    def _simulated(self) -> Iterator[Quote] | None:
        states = self._until_read(
            lambda: selectors.simulation_states(symbols=self.symbols), "instruments"
        )
        if states is None:
            return None
        if self.symbols:
            unknown = set(self.symbols) - {s.symbol for s in states}
            if unknown:
                raise FeedError(f"no active instrument with a price model: {sorted(unknown)}")
        simulator = Simulator(states, seed=self.seed, time_scale=self.time_scale)
        interval = 1.0 / self.rate
        stop = self.stop_event

        def generate() -> Iterator[Quote]:
            next_at = time.monotonic()
            while not stop.is_set():
                yield simulator.step(interval)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()  # fell far behind: don't burst to catch up

        return generate()

    def _replayed(self, path: Path) -> Iterator[Quote] | None:
        known = self._until_read(selectors.active_symbols, "instruments")
        if known is None:
            return None
        if self.symbols:
            known &= set(self.symbols)
        ticks = read_replay(path, known_symbols=known)
        speed, loop, stop = self.speed, self.loop, self.stop_event

        def generate() -> Iterator[Quote]:
            while True:
                started = time.monotonic()
                for offset, quote in replay_schedule(ticks, speed=speed):
                    delay = started + offset - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    if stop.is_set():
                        return
                    yield quote
                if not loop:
                    return

        return generate()

    def _publish(self, publisher: services.TickPublisher, quotes: Iterator[Quote]) -> None:
        latest: dict[str, Quote] = {}
        started = last_progress = last_save = time.monotonic()
        for quote in quotes:
            publisher.publish(quote)
            latest[quote.symbol] = quote
            now = time.monotonic()
            if now - last_save >= SAVE_EVERY_S:
                self._save(latest)
                last_save = now
            if now - last_progress >= PROGRESS_EVERY_S:
                elapsed = now - started
                self.write(
                    f"feed: {publisher.sent} ticks sent ({publisher.sent / elapsed:.1f}/s), "
                    f"{publisher.dropped} dropped; "
                    + ", ".join(f"{q.symbol} {q.last}" for q in list(latest.values())[:4])
                )
                last_progress = now
            if self.count is not None and publisher.sent + publisher.dropped >= self.count:
                break
            if self.stop_event.is_set():
                break
        self._save(latest)
        self.write(f"feed: stopped after {publisher.sent} ticks ({publisher.dropped} dropped)")

    def _save(self, latest: dict[str, Quote]) -> None:
        """Remember the last prices; while the database is away, skip with backoff."""
        if not latest or time.monotonic() < self.save_after:
            return
        try:
            services.price_models_save(prices={s: (q.last, q.open) for s, q in latest.items()})
        except DatabaseError as error:
            delay = self.backoff.next_delay()
            self.save_after = time.monotonic() + delay
            logger.warning(
                "feed: prices not saved: database error (%s); ticks go on, next try in %.1fs",
                str(error).strip(),
                delay,
            )
            close_old_connections()  # a broken connection is replaced at the next use
            return
        if self.backoff.attempt:
            logger.info("feed: database back, prices saved again")
            self.backoff.reset()
