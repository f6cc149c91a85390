"""Publish reference prices for every active instrument to the `ticks` topic."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from marketdata import selectors, services
from marketdata.feed import FeedError, Quote, Simulator, read_replay, replay_schedule
from tredye.workers import Backoff, StopFlag

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_EVERY_S = 10.0
SAVE_EVERY_S = 2.0


class Command(BaseCommand):
    help = (
        "Publish reference ticks: simulated (geometric Brownian motion, reproducible with "
        "--seed) or replayed from a CSV of recorded ticks (--replay FILE --speed X)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rate",
            type=float,
            default=None,
            help="Ticks per second over all instruments (default FEED_RATE).",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed of the simulation.")
        parser.add_argument(
            "--time-scale",
            type=float,
            default=600.0,
            help="Simulated seconds per real second (default 600).",
        )
        parser.add_argument("--symbols", nargs="+", help="Only these symbols.")
        parser.add_argument("--replay", type=Path, help="CSV of recorded ticks to replay.")
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="Replay speed: 2 plays twice as fast as recorded.",
        )
        parser.add_argument("--loop", action="store_true", help="Replay the file forever.")
        parser.add_argument(
            "--count",
            type=int,
            default=None,
            help="Stop after this many ticks (default: run until stopped).",
        )

    def handle(self, *args: object, **options: object) -> None:
        from django.conf import settings

        rate = options["rate"] if options["rate"] is not None else settings.FEED_RATE
        if not rate > 0:
            raise CommandError("--rate must be a positive number of ticks per second")
        if not options["speed"] > 0:
            raise CommandError("--speed must be positive")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be at least 1")
        stop = StopFlag()
        signal.signal(signal.SIGTERM, stop.set)
        signal.signal(signal.SIGINT, stop.set)
        # PostgreSQL holds the instruments and the last prices; the ticks themselves only go to
        # Kafka. A database that is away delays the start and the saving of prices, never the
        # feed: it backs off and carries on (a process that exits stops the whole local venue).
        self.backoff = Backoff()
        self.save_after = 0.0
        try:
            if options["replay"]:
                quotes = self._replayed(options, stop)
                mode = f"replaying {options['replay']} at {options['speed']}x"
            else:
                quotes = self._simulated(options, rate, stop)
                mode = f"simulating at {rate:g} ticks/s (seed {options['seed']})"
        except FeedError as error:
            raise CommandError(str(error)) from error
        if quotes is None:
            return  # stopped while waiting for the database
        publisher = services.TickPublisher()
        self.stdout.write(f"feed: {mode} -> {publisher.topic}")
        try:
            self._run(publisher, quotes, options["count"], stop)
        finally:
            publisher.close()

    def _until_read(self, read: Callable[[], T], stop: StopFlag, what: str) -> T | None:
        """`read()`, retried with backoff while the database is unavailable; None if stopped."""
        while not stop.is_set():
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
                stop.wait(delay)
            else:
                self.backoff.reset()
                return found
        return None

    def _simulated(self, options: dict, rate: float, stop: StopFlag):
        states = self._until_read(
            lambda: selectors.simulation_states(symbols=options["symbols"]), stop, "instruments"
        )
        if states is None:
            return None
        if options["symbols"]:
            unknown = set(options["symbols"]) - {s.symbol for s in states}
            if unknown:
                raise FeedError(f"no active instrument with a price model: {sorted(unknown)}")
        simulator = Simulator(states, seed=options["seed"], time_scale=options["time_scale"])
        interval = 1.0 / rate

        def generate():
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

    def _replayed(self, options: dict, stop: StopFlag):
        known = self._until_read(selectors.active_symbols, stop, "instruments")
        if known is None:
            return None
        if options["symbols"]:
            known &= set(options["symbols"])
        ticks = read_replay(options["replay"], known_symbols=known)

        def generate():
            while True:
                started = time.monotonic()
                for offset, quote in replay_schedule(ticks, speed=options["speed"]):
                    delay = started + offset - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    if stop.is_set():
                        return
                    yield quote
                if not options["loop"]:
                    return

        return generate()

    def _run(
        self, publisher: services.TickPublisher, quotes, count: int | None, stop: StopFlag
    ) -> None:
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
                self.stdout.write(
                    f"feed: {publisher.sent} ticks sent ({publisher.sent / elapsed:.1f}/s), "
                    f"{publisher.dropped} dropped; "
                    + ", ".join(f"{q.symbol} {q.last}" for q in list(latest.values())[:4])
                )
                last_progress = now
            if count is not None and publisher.sent + publisher.dropped >= count:
                break
            if stop.is_set():
                break
        self._save(latest)
        self.stdout.write(
            f"feed: stopped after {publisher.sent} ticks ({publisher.dropped} dropped)"
        )

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
