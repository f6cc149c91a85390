"""Publish reference prices for every active instrument to the `ticks` topic."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.feed import FeedError
from marketdata.feed_worker import FeedWorker


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

    def handle(
        self,
        *args: object,
        rate: float | None,
        seed: int | None,
        time_scale: float,
        symbols: list[str] | None,
        replay: Path | None,
        speed: float,
        loop: bool,
        count: int | None,
        **options: object,
    ) -> None:
        try:
            feed = FeedWorker(
                rate=rate,
                seed=seed,
                time_scale=time_scale,
                symbols=symbols,
                replay=replay,
                speed=speed,
                loop=loop,
                count=count,
                write=self.stdout.write,
            )
            feed.install_signal_handlers()
            feed.run()
        except FeedError as error:
            raise CommandError(str(error)) from error
