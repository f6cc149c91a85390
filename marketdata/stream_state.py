"""The state behind the streams, pure (no database, no Redis): a book's price levels, the
top-N view of a book a socket asked for, the recent trades of a symbol, the 24 h statistics
of a ticker, and the one shape of a stream message.

The stream worker holds a `BookMirror` per symbol (built from the matcher's committed book,
then its `book` deltas); each web process holds one per symbol its sockets watch (built from
the worker's snapshot, then the worker's deltas) and a `DepthView` per depth they asked for.
"""

from __future__ import annotations

import datetime
import heapq
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.units import plain

BID, ASK = 1, -1
Level = tuple[Decimal, Decimal]  # (price, quantity)
TAPE_LENGTH = 50  # trades a `trades.*` snapshot carries
DAY = datetime.timedelta(hours=24)


def stream_message(
    key: str,
    *,
    type: str,  # noqa: A002 - the protocol's name
    seq: int,
    ts: int | None,
    data: dict[str, Any],
    prev_seq: int | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """One message of a channel (docs/architecture.md §6). `ch`, `seq` and `ts` come first:
    `socket_metrics` reads `ts` from the start of the text without parsing it."""
    message: dict[str, Any] = {"ch": key, "seq": seq, "ts": ts, "type": type}
    if prev_seq is not None:
        message["prev_seq"] = prev_seq
    if depth is not None:
        message["depth"] = depth
    message["data"] = data
    return message


def encode(message: dict[str, Any]) -> str:
    """A message as the JSON text sockets splice into frames (encoded once, shared)."""
    return json.dumps(message, separators=(",", ":"))


def levels_data(bids: Iterable[Level], asks: Iterable[Level]) -> dict[str, list[list]]:
    """Bids and asks as [price, quantity] strings (`trading.messages.book_delta_message`)."""
    return {
        "bids": [[plain(p), plain(q)] for p, q in bids],
        "asks": [[plain(p), plain(q)] for p, q in asks],
    }


def levels_parse(data: Mapping[str, Any]) -> dict[tuple[int, Decimal], Decimal]:
    """(side, price) -> quantity from `levels_data`'s shape; ValueError when malformed."""
    levels: dict[tuple[int, Decimal], Decimal] = {}
    for side, name in ((BID, "bids"), (ASK, "asks")):
        rows = data.get(name)
        if not isinstance(rows, list):
            raise ValueError(f"{name} must be a list")
        for row in rows:
            if not (
                isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) for v in row)
            ):
                raise ValueError(f"a level of {name} is not [price, quantity]")
            price, quantity = Decimal(row[0]), Decimal(row[1])
            if not (price.is_finite() and quantity.is_finite()) or quantity < 0 or price <= 0:
                raise ValueError(f"a level of {name} is not a positive price and quantity")
            levels[(side, price)] = quantity
    return levels


class BookMirror:
    """Every price level of one book with the number (`seq`) of the last delta in it.

    Deltas carry absolute quantities (0: the level is gone), so a delta is applied by
    assignment and applying one twice changes nothing.
    """

    def __init__(self, seq: int = 0, levels: Mapping[tuple[int, Decimal], Decimal] = ()) -> None:  # type: ignore[assignment]
        self.seq = seq
        self.sides: dict[int, dict[Decimal, Decimal]] = {BID: {}, ASK: {}}
        self.apply(dict(levels))

    def apply(self, levels: Mapping[tuple[int, Decimal], Decimal]) -> None:
        for (side, price), quantity in levels.items():
            if quantity:
                self.sides[side][price] = quantity
            else:
                self.sides[side].pop(price, None)

    def replace(self, seq: int, levels: Mapping[tuple[int, Decimal], Decimal]) -> dict:
        """Take another whole book (a resync); return the difference as a delta."""
        old = self.levels()
        new = {level: qty for level, qty in levels.items() if qty}
        delta = {level: Decimal(0) for level in old if level not in new}
        delta.update({level: qty for level, qty in new.items() if old.get(level) != qty})
        self.sides = {BID: {}, ASK: {}}
        self.apply(new)
        self.seq = seq
        return delta

    def levels(self) -> dict[tuple[int, Decimal], Decimal]:
        return {(side, p): q for side, prices in self.sides.items() for p, q in prices.items()}

    def top(self, depth: int | None = None) -> tuple[list[Level], list[Level]]:
        """Bids best (highest) first and asks best (lowest) first, at most `depth` each."""
        bids, asks = self.sides[BID], self.sides[ASK]
        if depth is None:
            bid_prices = sorted(bids, reverse=True)
            ask_prices = sorted(asks)
        else:
            bid_prices = heapq.nlargest(depth, bids)
            ask_prices = heapq.nsmallest(depth, asks)
        return [(p, bids[p]) for p in bid_prices], [(p, asks[p]) for p in ask_prices]

    def best(self) -> tuple[Level | None, Level | None]:
        bids, asks = self.top(1)
        return (bids[0] if bids else None), (asks[0] if asks else None)

    def snapshot_data(self, depth: int | None = None) -> dict[str, list[list]]:
        return levels_data(*self.top(depth))


class DepthView:
    """The top `depth` levels of a book as its subscribers last saw them, and the `seq` of the
    last message that changed them: a view's update names that seq as its `prev_seq`, so a
    book change outside the top `depth` sends nothing and breaks no chain."""

    def __init__(self, depth: int, mirror: BookMirror) -> None:
        self.depth = depth
        bids, asks = mirror.top(depth)
        self.bids, self.asks = dict(bids), dict(asks)
        self.seq = mirror.seq

    def snapshot_data(self) -> dict[str, list[list]]:
        return levels_data(sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))

    def refresh(self, mirror: BookMirror) -> tuple[int, dict[str, list[list]]] | None:
        """Follow `mirror`; return (prev_seq, changed levels) when the top changed, else None."""
        bids, asks = mirror.top(self.depth)
        new_bids, new_asks = dict(bids), dict(asks)
        bid_changes = _changes(self.bids, new_bids)
        ask_changes = _changes(self.asks, new_asks)
        if not bid_changes and not ask_changes:
            return None
        prev, self.seq = self.seq, mirror.seq
        self.bids, self.asks = new_bids, new_asks
        return prev, levels_data(
            sorted(bid_changes.items(), reverse=True), sorted(ask_changes.items())
        )


def _changes(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> dict[Decimal, Decimal]:
    changes = {price: Decimal(0) for price in old if price not in new}
    changes.update({price: qty for price, qty in new.items() if old.get(price) != qty})
    return changes


class Tape:
    """The latest trades of one symbol (their public shape), and the last trade's number."""

    def __init__(self, trades: Iterable[dict[str, Any]] = (), seq: int = 0) -> None:
        self.trades: deque[dict[str, Any]] = deque(trades, maxlen=TAPE_LENGTH)
        self.seq = self.trades[-1]["seq"] if self.trades else seq

    def add(self, trade: dict[str, Any]) -> bool:
        """Append a trade; False (and nothing changes) when it is not newer than the last."""
        if trade["seq"] <= self.seq:
            return False
        self.trades.append(trade)
        self.seq = trade["seq"]
        return True

    def snapshot_data(self) -> dict[str, list]:
        return {"trades": list(self.trades)}


@dataclass(slots=True)
class MinuteBar:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class RollingDay:
    """A ticker's last-24-hours figures from its one-minute bars (the candle builder's).

    The stream worker asks on every flush that changes a ticker, and trades change the newest
    bar all the time: the older bars' aggregate is kept (worked out again at most once a
    second, or when a new minute starts) and only the newest bar is folded in per call.
    """

    def __init__(self) -> None:
        self.bars: dict[datetime.datetime, MinuteBar] = {}
        self.latest: datetime.datetime | None = None
        self.version = 0  # changes when a bar other than the newest one changes
        self._base: tuple[tuple[int, int], tuple | None] | None = None

    def set(self, start: datetime.datetime, bar: MinuteBar) -> None:
        if start != self.latest:
            self.version += 1
            if self.latest is None or start > self.latest:
                self.latest = start
        self.bars[start] = bar

    def _older(self, since: datetime.datetime, second: int) -> tuple | None:
        """(first start, first open, high, low, volume) of the window's bars but the newest."""
        key = (second, self.version)
        if self._base is not None and self._base[0] == key:
            return self._base[1]
        for start in [s for s in self.bars if s < since - datetime.timedelta(minutes=1)]:
            del self.bars[start]
        window = sorted(
            (start, bar) for start, bar in self.bars.items() if since <= start != self.latest
        )
        base = None
        if window:
            base = (
                window[0][0],
                window[0][1].open,
                max(bar.high for _, bar in window),
                min(bar.low for _, bar in window),
                sum((bar.volume for _, bar in window), Decimal(0)),
            )
        self._base = (key, base)
        return base

    def figures(self, now: datetime.datetime) -> dict[str, str | None]:
        """high, low, volume, change and change % over the bars that started in the last
        24 h (the first bar's open to the last bar's close); None before any trade."""
        since = now - DAY
        base = self._older(since, int(now.timestamp()))
        newest = self.bars.get(self.latest) if self.latest and self.latest >= since else None
        if base is None and newest is None:
            return dict.fromkeys(
                ("high_24h", "low_24h", "volume_24h", "change_24h", "change_pct_24h")
            )
        if base is None and newest is not None:
            first_open, close = newest.open, newest.close
            high, low, volume = newest.high, newest.low, newest.volume
        elif base is not None:
            _, first_open, high, low, volume = base
            close = newest.close if newest is not None else self._last_close(since)
            if newest is not None:
                high, low = max(high, newest.high), min(low, newest.low)
                volume += newest.volume
        change = close - first_open
        return {
            "high_24h": plain(high),
            "low_24h": plain(low),
            "volume_24h": plain(volume),
            "change_24h": plain(change),
            "change_pct_24h": plain((change * 100 / first_open).quantize(Decimal("0.01")))
            if first_open
            else None,
        }

    def _last_close(self, since: datetime.datetime) -> Decimal:
        return max((s, b) for s, b in self.bars.items() if s >= since)[1].close
