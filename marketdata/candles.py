"""Candles (OHLCV bars) from trades: the one builder, pure, without a database.

The same `CandleBuilder` folds trades into bars wherever bars are made: the candle store
(`marketdata.candle_store`) seeds it with the stored forming bars and applies new trades, the
backfill runs a symbol's whole history through it, and the stream worker can hold one per
symbol and feed it the `trades` topic (it reports which bars changed and which closed, what a
`candles.SYMBOL.INTERVAL` channel sends). So a bar is the same whether it was built live or
from history.

Rules, chosen so that the result depends only on the list of trades, not on how it arrived:

- Trades are applied in trade-sequence order: each batch is sorted by `seq` first. Each series
  (one interval of one symbol) remembers the last seq it applied (its forming bar's
  `last_trade_seq`); a trade at or below it is a duplicate (a redelivery, a replay after the
  broker came back empty) and is ignored. The matcher numbers an instrument's trades 1, 2, 3 …
  and publishes them in that order under one key, so a lower seq after a higher one is never
  new; a gap is not waited for (what was missed comes back by a backfill from PostgreSQL).
- A trade counts in the bar of its `executed_at`, bucketed by the interval from the Unix epoch
  (UTC). Time never goes back within a series: a trade stamped before the forming bar's start
  (a clock stepped back) counts in the forming bar.
- A bar closes when a trade arrives in a later bucket; a bar nobody traded in does not exist.
- open/close are the first/last trade's price by seq, volume sums quantities (base), quote
  volume sums each trade's price × quantity rounded to `QUOTE_PLACES` decimals (the stored
  column's scale), so a bar folded in pieces and stored between them equals one built at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

# name → seconds; the names are the API's and the channels' (`candles.AAPL.1m`).
INTERVALS: dict[str, int] = {"1s": 1, "1m": 60, "5m": 300, "1h": 3600}
QUOTE_PLACES = 10
_QUOTE_QUANTUM = Decimal(1).scaleb(-QUOTE_PLACES)
_WIDE = Context(prec=60)  # sums of NUMERIC(30, 10) values never round
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def interval_seconds(interval: str) -> int:
    """The length of `interval` in seconds; ValueError naming the known ones otherwise."""
    try:
        return INTERVALS[interval]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown interval {str(interval)[:20]!r}; use one of {', '.join(INTERVALS)}"
        ) from None


def bucket_start(ts: datetime.datetime, interval: str) -> datetime.datetime:
    """The start (UTC) of the `interval` bar that holds the aware time `ts`."""
    if ts.tzinfo is None:
        raise ValueError("bucket_start needs an aware datetime")
    seconds = interval_seconds(interval)
    elapsed = ts - _EPOCH
    whole = elapsed.days * 86_400 + elapsed.seconds  # floor: microseconds dropped
    return _EPOCH + datetime.timedelta(seconds=whole - whole % seconds)


@dataclass(frozen=True, slots=True)
class TradeIn:
    """What a bar needs of one trade (`trading.models.Trade` or a `trades` topic message)."""

    seq: int
    price: Decimal
    quantity: Decimal
    executed_at: datetime.datetime


@dataclass(slots=True)
class Bar:
    """One bar of one series. Mutable inside the builder; what it reports are copies."""

    symbol: str
    interval: str
    start: datetime.datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    last_trade_seq: int

    @classmethod
    def first(cls, symbol: str, interval: str, start: datetime.datetime, trade: TradeIn) -> Bar:
        return cls(
            symbol=symbol,
            interval=interval,
            start=start,
            open=trade.price,
            high=trade.price,
            low=trade.price,
            close=trade.price,
            volume=trade.quantity,
            quote_volume=quote_of(trade),
            trades=1,
            last_trade_seq=trade.seq,
        )

    def add(self, trade: TradeIn) -> None:
        if trade.price > self.high:
            self.high = trade.price
        if trade.price < self.low:
            self.low = trade.price
        self.close = trade.price
        self.volume = _WIDE.add(self.volume, trade.quantity)
        self.quote_volume = _WIDE.add(self.quote_volume, quote_of(trade))
        self.trades += 1
        self.last_trade_seq = trade.seq

    @property
    def end(self) -> datetime.datetime:
        return self.start + datetime.timedelta(seconds=INTERVALS[self.interval])


def bar_message(bar: Any, *, closed: bool | None = None) -> dict[str, Any]:
    """A bar (a `Bar`, or a stored `Candle`: they share these names) as the candle endpoint and
    the `candles.*` channels show it: `start` in epoch ms, numbers as plain strings; on the
    channels also its `interval` and whether it is `closed` (final)."""
    message: dict[str, Any] = {
        "start": (bar.start - _EPOCH) // datetime.timedelta(milliseconds=1),
        "open": _plain(bar.open),
        "high": _plain(bar.high),
        "low": _plain(bar.low),
        "close": _plain(bar.close),
        "volume": _plain(bar.volume),
        "quote_volume": _plain(bar.quote_volume),
        "trades": bar.trades,
    }
    if closed is not None:
        message |= {"interval": bar.interval, "closed": closed}
    return message


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def quote_of(trade: TradeIn) -> Decimal:
    """price × quantity at the stored scale (half-even), the quote volume one trade adds."""
    return _WIDE.multiply(trade.price, trade.quantity).quantize(
        _QUOTE_QUANTUM, rounding=ROUND_HALF_EVEN, context=_WIDE
    )


@dataclass
class Changes:
    """What one `apply` did: the bars whose values changed (their state after the batch,
    closed ones included), and the bars that closed, each once, oldest first."""

    changed: list[Bar] = field(default_factory=list)
    closed: list[Bar] = field(default_factory=list)
    applied: int = 0  # trades applied (to at least one series); duplicates are not counted


class CandleBuilder:
    """The forming bar of each interval of one symbol, and the trades folded into it.

    Seed it with the stored forming bars (`bars`) to carry on where a previous builder
    stopped; it keeps nothing else, so a long backfill holds four bars, whatever its length.
    """

    def __init__(
        self,
        symbol: str,
        *,
        intervals: Iterable[str] = INTERVALS,
        bars: Iterable[Bar] = (),
    ) -> None:
        self.symbol = symbol
        self.intervals = [i for i in intervals if interval_seconds(i)]
        self.forming: dict[str, Bar | None] = dict.fromkeys(self.intervals)
        for bar in bars:
            if bar.interval in self.forming:
                self.forming[bar.interval] = replace(bar)

    def last_seq(self, interval: str) -> int:
        """The seq of the last trade the series applied (0 before any)."""
        bar = self.forming[interval]
        return bar.last_trade_seq if bar is not None else 0

    def apply(self, trades: Iterable[TradeIn]) -> Changes:
        """Fold `trades` (any order, duplicates allowed) into the bars; see the module's rules."""
        changes = Changes()
        touched: dict[tuple[str, datetime.datetime], Bar] = {}
        applied: set[int] = set()
        for trade in sorted(trades, key=lambda t: t.seq):
            for interval in self.intervals:
                bar = self.forming[interval]
                if bar is not None and trade.seq <= bar.last_trade_seq:
                    continue
                start = bucket_start(trade.executed_at, interval)
                if bar is not None and start <= bar.start:
                    bar.add(trade)
                else:
                    if bar is not None:
                        changes.closed.append(replace(bar))
                    bar = self.forming[interval] = Bar.first(self.symbol, interval, start, trade)
                touched[(interval, bar.start)] = bar
                applied.add(trade.seq)
        changes.applied = len(applied)
        # A closed bar is never changed again (the series moved on to a new object), so a copy
        # of each touched bar is its state after the batch.
        changes.changed = [replace(bar) for bar in touched.values()]
        changes.changed.sort(key=lambda b: (b.start, INTERVALS[b.interval]))
        changes.closed.sort(key=lambda b: (b.start, INTERVALS[b.interval]))
        return changes
