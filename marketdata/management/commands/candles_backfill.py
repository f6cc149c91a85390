"""Rebuild stored candles from trading's trades (marketdata.candle_store.candles_backfill)."""

import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.candle_store import Backfilled, UnknownSymbol, candles_backfill


class Command(BaseCommand):
    help = (
        "Rebuild the candles of one symbol (default: every instrument) from its trades, "
        "through the same builder as live candles; --since rebuilds from that time's hour on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", help="the instrument to rebuild (default: all)")
        parser.add_argument(
            "--since",
            help="ISO 8601 time (UTC when no offset); bars from the start of its hour are rebuilt",
        )

    def handle(
        self, *args: object, symbol: str | None = None, since: str | None = None, **_: object
    ) -> None:
        start = None
        if since is not None:
            try:
                start = datetime.datetime.fromisoformat(since)
            except ValueError:
                raise CommandError(
                    f"--since takes an ISO 8601 time such as 2026-11-27T10:00:00Z, not {since!r}"
                ) from None
            if start.tzinfo is None:
                start = start.replace(tzinfo=datetime.UTC)
        try:
            results = candles_backfill(symbol=symbol, since=start, progress=self._progress)
        except UnknownSymbol as unknown:
            raise CommandError(f"--symbol: {unknown}") from None
        for result in results:
            self.stdout.write(f"{result.symbol}: {result.trades} trades, {result.bars} bars")
        self.stdout.write(f"candles rebuilt for {len(results)} instrument(s)")

    def _progress(self, done: Backfilled) -> None:
        self.stdout.write(f"  {done.symbol}: {done.trades} trades read, {done.bars} bars closed")
