"""Candles in PostgreSQL: fold trades into the stored bars, rebuild them from trading's trades,
and read them back as history. Every bar is made by `marketdata.candles.CandleBuilder`, so a
bar folded live and one rebuilt from history are the same.

One writer per symbol at a time is assumed (the stream worker, or a backfill run while it is
not writing that symbol): `candles_apply` locks the forming bars it carries on from, which
serializes appliers once a symbol has bars, but two that create a symbol's first bars at once
could both count a trade.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from marketdata.candles import INTERVALS, Bar, CandleBuilder, Changes, TradeIn, bucket_start
from marketdata.models import Candle
from trading.models import Instrument, Trade

SYMBOL_MAX = Instrument._meta.get_field("symbol").max_length or 32
BACKFILL_CHUNK = 5000  # trades read and bars written per round trip
STORED_FIELDS = [
    "open", "high", "low", "close", "volume", "quote_volume", "trades", "last_trade_seq",
    "updated_at",
]  # fmt: skip
# The longest interval: a backfill `since` a time starts at this interval's bucket, so every
# bar it rewrites is rebuilt whole.
LONGEST = max(INTERVALS, key=INTERVALS.__getitem__)


class UnknownSymbol(LookupError):
    """No instrument has this symbol."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"no instrument {symbol[:40]!r}")
        self.symbol = symbol


def instrument_of(symbol: str) -> Instrument:
    if len(symbol) > SYMBOL_MAX or "\x00" in symbol:  # PostgreSQL text cannot hold a NUL
        raise UnknownSymbol(symbol)
    try:
        return Instrument.objects.get(symbol=symbol)
    except Instrument.DoesNotExist:
        raise UnknownSymbol(symbol) from None


def trade_in(trade: Trade) -> TradeIn:
    """A stored trade as the builder takes it."""
    return TradeIn(
        seq=trade.seq, price=trade.price, quantity=trade.quantity, executed_at=trade.executed_at
    )


# The values a stored candle and a builder's bar share, by name (all of the bar's but its symbol).
_BAR_VALUES = tuple(f.name for f in fields(Bar) if f.name != "symbol")


def _bar(symbol: str, candle: Candle) -> Bar:
    return Bar(symbol=symbol, **{name: getattr(candle, name) for name in _BAR_VALUES})


def _row(instrument: Instrument, bar: Bar) -> Candle:
    return Candle(instrument=instrument, **{name: getattr(bar, name) for name in _BAR_VALUES})


def _save(instrument: Instrument, bars: list[Bar]) -> None:
    """Insert the bars, or overwrite the stored ones at the same (interval, start)."""
    if bars:
        Candle.objects.bulk_create(
            [_row(instrument, bar) for bar in bars],
            update_conflicts=True,
            unique_fields=["instrument", "interval", "start"],
            update_fields=STORED_FIELDS,
        )


def candles_apply(*, symbol: str, trades: Iterable[TradeIn]) -> Changes:
    """Fold `trades` of `symbol` into its stored candles, in one transaction; return what
    changed and closed. Idempotent: a trade at or below a series' last counted seq (its
    forming bar's `last_trade_seq`) is not counted again, so applying a batch twice changes
    nothing. Raises UnknownSymbol."""
    with transaction.atomic():
        instrument = instrument_of(symbol)
        forming = []
        for interval in INTERVALS:
            latest = (
                Candle.objects.select_for_update()
                .filter(instrument=instrument, interval=interval)
                .order_by("-start")
                .first()
            )
            if latest is not None:
                forming.append(_bar(symbol, latest))
        changes = CandleBuilder(symbol, bars=forming).apply(trades)
        _save(instrument, changes.changed)
    return changes


def forming_bars(instrument: Instrument) -> list[Bar]:
    """The latest stored bar of each interval: what a builder carries on from."""
    bars = []
    for interval in INTERVALS:
        latest = (
            Candle.objects.filter(instrument=instrument, interval=interval)
            .order_by("-start")
            .first()
        )
        if latest is not None:
            bars.append(_bar(instrument.symbol, latest))
    return bars


def candles_save(instrument: Instrument, bars: list[Bar]) -> None:
    """Store bars a live builder made (seeded by `forming_bars`), overwriting their stored
    selves; idempotent, like `candles_apply`, whose builder is the same."""
    with transaction.atomic():
        _save(instrument, bars)


def day_bars(instrument: Instrument, *, since: datetime.datetime) -> list[Bar]:
    """The one-minute bars of `instrument` that started at or after `since`, oldest first."""
    candles = Candle.objects.filter(instrument=instrument, interval="1m", start__gte=since)
    return [_bar(instrument.symbol, candle) for candle in candles.order_by("start")]


@dataclass
class Backfilled:
    symbol: str
    trades: int = 0
    bars: int = 0


Progress = Callable[[Backfilled], None]


def candles_backfill(
    *,
    symbol: str | None = None,
    since: datetime.datetime | None = None,
    progress: Progress | None = None,
) -> list[Backfilled]:
    """Rebuild the candles of `symbol` (default: every instrument) from trading's trades,
    through the same builder; `since` (aware) rebuilds only from the start of its hour on,
    the bars before are kept. Each symbol in one transaction; `progress` is called after each
    chunk of trades. Raises UnknownSymbol, ValueError for a naive `since`."""
    if since is not None and timezone.is_naive(since):
        raise ValueError("since must carry a time zone")
    if symbol is not None:
        instruments = [instrument_of(symbol)]
    else:
        instruments = list(Instrument.objects.order_by("symbol"))
    return [_rebuild(instrument, since, progress) for instrument in instruments]


def _rebuild(
    instrument: Instrument, since: datetime.datetime | None, progress: Progress | None
) -> Backfilled:
    done = Backfilled(instrument.symbol)
    with transaction.atomic():
        stored = Candle.objects.filter(instrument=instrument)
        trades = Trade.objects.filter(instrument=instrument)
        if since is not None:
            boundary = bucket_start(since, LONGEST)
            stored = stored.filter(start__gte=boundary)
            # By seq, not by time: every trade from the first one stamped at or after the
            # boundary, as the builder took them (a later trade stamped earlier included).
            first = (
                trades.filter(executed_at__gte=boundary)
                .order_by("seq")
                .values_list("seq", flat=True)
                .first()
            )
            trades = trades.filter(seq__gte=first) if first is not None else trades.none()
        stored.delete()
        builder = CandleBuilder(instrument.symbol)
        for chunk in _chunks(trades.order_by("seq")):
            closed = builder.apply(chunk).closed
            Candle.objects.bulk_create([_row(instrument, bar) for bar in closed])
            done.trades += len(chunk)
            done.bars += len(closed)
            if progress is not None:
                progress(done)
        forming = [bar for bar in builder.forming.values() if bar is not None]
        Candle.objects.bulk_create([_row(instrument, bar) for bar in forming])
        done.bars += len(forming)
    return done


def _chunks(trades: QuerySet[Trade]) -> Iterator[list[TradeIn]]:
    rows = trades.values_list("seq", "price", "quantity", "executed_at")
    chunk: list[TradeIn] = []
    for seq, price, quantity, executed_at in rows.iterator(chunk_size=BACKFILL_CHUNK):
        chunk.append(TradeIn(seq=seq, price=price, quantity=quantity, executed_at=executed_at))
        if len(chunk) == BACKFILL_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def candles_read(
    *,
    symbol: str,
    interval: str,
    start: datetime.datetime | None,
    end: datetime.datetime | None,
    limit: int,
) -> list[Candle]:
    """Stored bars of `symbol` and `interval`, oldest first: those starting in [start, end);
    at most `limit`, the first ones when only `start` is given, else the latest ones.
    Raises UnknownSymbol."""
    instrument = instrument_of(symbol)
    bars = Candle.objects.filter(instrument=instrument, interval=interval)
    if start is not None:
        bars = bars.filter(start__gte=start)
    if end is not None:
        bars = bars.filter(start__lt=end)
    if start is not None and end is None:
        return list(bars.order_by("start")[:limit])
    return list(reversed(bars.order_by("-start")[:limit]))
