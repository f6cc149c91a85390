"""What the stream worker knows of the market between two flushes, and what a flush sends.

One `SymbolState` per instrument (loaded from PostgreSQL the first time the worker needs it,
and again whenever its stream skips a number): the book's levels and the top `MAX_DEPTH` view
the web processes mirror, the latest trades, the candle builder (the same one the backfill
uses; this worker is the one writer of live bars), the last day's one-minute bars. Private
channels keep nothing but the last event number per account.

`drain` turns what changed since the last flush into messages (docs/architecture.md §6), each
encoded once: key -> JSON text, plus the public channels' snapshots.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.utils import timezone

from accounts.selectors import balances_of
from marketdata import selectors
from marketdata.candle_store import candles_save, day_bars, forming_bars
from marketdata.candles import Bar, CandleBuilder, TradeIn, bar_message
from marketdata.channels import BOOK_DEPTHS, private_key
from marketdata.stream_state import (
    DAY,
    TAPE_LENGTH,
    BookMirror,
    DepthView,
    MinuteBar,
    RollingDay,
    Tape,
    encode,
    stream_message,
)
from trading.messages import (
    EPOCH,
    MILLISECOND,
    balance_message,
    position_message,
    public_trade_message,
    public_trade_of,
)
from trading.models import Instrument
from trading.units import plain

if TYPE_CHECKING:
    from marketdata.stream import Conflator

logger = logging.getLogger(__name__)

# The deepest view a socket may ask for: web processes mirror this many levels a side.
MAX_DEPTH = max(BOOK_DEPTHS)
SAVE_CANDLES_EVERY_S = 1.0


class UnknownSymbolError(LookupError):
    """A record for a symbol that is no instrument."""


@dataclass
class SymbolState:
    instrument: Instrument
    mirror: BookMirror
    tape: Tape
    builder: CandleBuilder
    day: RollingDay
    view: DepthView = field(init=False)
    # What changed since the last flush.
    book_changed: bool = False
    book_ts: int | None = None
    trades_new: list[dict[str, Any]] = field(default_factory=list)
    trades_prev: int = 0
    candle_in: list[TradeIn] = field(default_factory=list)
    venue_ts: int | None = None
    # Whole snapshots to send at the next flush (after a load or a lost flush).
    reset: bool = True
    candles: dict[str, str] = field(default_factory=dict)  # interval -> latest message text
    candle_seq: dict[str, int] = field(default_factory=dict)
    unsaved: dict[tuple[str, datetime.datetime], Bar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.view = DepthView(MAX_DEPTH, self.mirror)

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    def changed(self) -> bool:
        return self.reset or self.book_changed or bool(self.trades_new or self.candle_in)


@dataclass
class AccountEvents:
    prev: int
    seq: int
    ts: int
    orders: dict[int, dict] = field(default_factory=dict)
    fills: list[dict] = field(default_factory=list)


class MarketState:
    def __init__(self, conflator: Conflator) -> None:
        self.conflator = conflator
        self.symbols: dict[str, SymbolState] = {}
        self.unknown: dict[str, float] = {}  # symbol -> when the database last said so
        self.ticks: dict[str, tuple[int, dict[str, str]]] = {}
        self.venue_dirty: set[str] = set()
        self.account_seq: dict[int, int] = {}
        self.accounts: dict[int, AccountEvents] = {}
        self.load_all = True
        self.saved_at = time.monotonic()

    # -- loading ----------------------------------------------------------------------------
    def forget(self) -> None:
        """Start over from PostgreSQL: every book and tape is loaded again and sent whole."""
        self.save_candles(force=True)
        self.symbols.clear()
        self.load_all = True

    def resend_all(self) -> None:
        """A flush was lost (Redis away): send every channel whole at the next one."""
        for state in self.symbols.values():
            state.reset = True
            state.trades_new.clear()
        self.venue_dirty.update(self.symbols)
        self.venue_dirty.update(self.ticks)
        self.accounts.clear()  # web processes see the gap and load open orders again

    def _symbol(self, symbol: str) -> SymbolState:
        state = self.symbols.get(symbol)
        if state is not None:
            return state
        if time.monotonic() - self.unknown.get(symbol, -60.0) < 10.0:
            raise UnknownSymbolError(f"no instrument {symbol[:32]!r}")
        instrument = Instrument.objects.filter(symbol=symbol).select_related("quote").first()
        if instrument is None:
            self.unknown[symbol] = time.monotonic()
            raise UnknownSymbolError(f"no instrument {symbol[:32]!r}")
        state = self.symbols[symbol] = self._load(instrument)
        return state

    def _load(self, instrument: Instrument) -> SymbolState:
        book = selectors.book_snapshot(instrument, depth=None)
        levels = {(1, p): q for p, q in book.bids} | {(-1, p): q for p, q in book.asks}
        trades = selectors.recent_trades(instrument, limit=TAPE_LENGTH)
        tape = Tape([public_trade_message(trade) for trade in reversed(trades)])
        now = timezone.now()
        day = RollingDay()
        for bar in day_bars(instrument, since=now - DAY):
            day.set(bar.start, _minute(bar))
        state = SymbolState(
            instrument=instrument,
            mirror=BookMirror(book.seq, levels),
            tape=tape,
            builder=CandleBuilder(instrument.symbol, bars=forming_bars(instrument)),
            day=day,
        )
        for forming in state.builder.forming.values():
            if forming is not None:
                state.candles[forming.interval] = self._candles_text(state, [forming], set())
        self.venue_dirty.add(instrument.symbol)
        logger.info(
            "stream: %s loaded: book at delta %d, tape at trade %d",
            instrument.symbol,
            book.seq,
            tape.seq,
        )
        return state

    # -- events -----------------------------------------------------------------------------
    def tick(self, symbol: str, ts: int, data: dict[str, str]) -> None:
        self.conflator.add(f"ticker.{symbol}", ts=ts, data=data)
        self.ticks[symbol] = (ts, data)

    def book(self, symbol: str, seq: int, ts: int, levels: dict) -> None:
        state = self._symbol(symbol)
        mirror = state.mirror
        if seq <= mirror.seq:
            return  # already in the book (loaded after it, or a redelivery)
        if seq != mirror.seq + 1:
            logger.warning(
                "stream: %s book went from delta %d to %d; loading it again",
                symbol,
                mirror.seq,
                seq,
            )
            book = selectors.book_snapshot(state.instrument, depth=None)
            mirror.replace(
                book.seq, {(1, p): q for p, q in book.bids} | {(-1, p): q for p, q in book.asks}
            )
            if seq <= mirror.seq:
                state.book_changed, state.book_ts = True, ts
                self.venue_dirty.add(symbol)
                return
        mirror.apply(levels)
        mirror.seq = seq
        state.book_changed, state.book_ts = True, ts
        self.venue_dirty.add(symbol)

    def trade(self, symbol: str, data: dict[str, Any]) -> None:
        state = self._symbol(symbol)
        seq = data["seq"]
        if seq <= state.tape.seq:
            return
        if seq != state.tape.seq + 1:
            missed = selectors.trades_after(
                state.instrument, after_seq=state.tape.seq, before_seq=seq
            )
            logger.warning(
                "stream: %s trades went from %d to %d; %d read from the database",
                symbol,
                state.tape.seq,
                seq,
                len(missed),
            )
            for trade in missed:
                self._add_trade(state, public_trade_message(trade))
        self._add_trade(state, public_trade_of(data))

    def _add_trade(self, state: SymbolState, trade: dict[str, Any]) -> None:
        if not state.trades_new:
            state.trades_prev = state.tape.seq
        if state.tape.add(trade):
            state.trades_new.append(trade)
            executed = EPOCH + trade["ts"] * MILLISECOND
            state.candle_in.append(
                TradeIn(trade["seq"], Decimal(trade["price"]), Decimal(trade["quantity"]), executed)
            )
            state.venue_ts = trade["ts"]
            self.venue_dirty.add(state.symbol)

    def account(self, account_id: int, seq: int, ts: int, data: dict[str, Any]) -> None:
        if seq <= self.account_seq.get(account_id, 0):
            return
        self.account_seq[account_id] = seq
        events = self.accounts.get(account_id)
        if events is None:
            events = self.accounts[account_id] = AccountEvents(prev=seq - 1, seq=seq, ts=ts)
        events.seq, events.ts = seq, ts
        for order in data["orders"]:
            events.orders[order["id"]] = order
        events.fills += data["trades"]

    # -- flushing ---------------------------------------------------------------------------
    def changed(self) -> bool:
        return bool(
            self.load_all
            or self.conflator
            or self.venue_dirty
            or self.accounts
            or any(state.changed() for state in self.symbols.values())
        )

    def drain(self) -> tuple[dict[str, str], dict[str, str]]:
        """What changed since the last call: (key -> message text, key -> snapshot text)."""
        if self.load_all:
            for instrument in selectors.active_instruments():
                if instrument.symbol not in self.symbols:
                    self.symbols[instrument.symbol] = self._load(instrument)
            self.load_all = False
        messages: dict[str, str] = {}
        snapshots: dict[str, str] = {}
        for state in self.symbols.values():
            if state.changed():
                self._drain_symbol(state, messages, snapshots)
        self._drain_tickers(messages, snapshots)
        if self.accounts:
            self._drain_accounts(messages)
        return messages, snapshots

    def _drain_symbol(
        self, state: SymbolState, messages: dict[str, str], snapshots: dict[str, str]
    ) -> None:
        symbol = state.symbol
        book_key, trades_key = f"book.{symbol}", f"trades.{symbol}"
        view = state.view
        ts = state.book_ts
        if state.reset:
            state.view = view = DepthView(MAX_DEPTH, state.mirror)
            messages[book_key] = self._book_snapshot(state, ts)
        elif state.book_changed and (refreshed := view.refresh(state.mirror)) is not None:
            prev, data = refreshed
            messages[book_key] = encode(
                stream_message(
                    book_key,
                    type="update",
                    seq=view.seq,
                    prev_seq=prev,
                    ts=ts,
                    depth=MAX_DEPTH,
                    data=data,
                )
            )
        if book_key in messages:
            snapshots[book_key] = (
                messages[book_key] if state.reset else self._book_snapshot(state, ts)
            )
        tape = state.tape
        last_ts = tape.trades[-1]["ts"] if tape.trades else None
        if state.reset:
            messages[trades_key] = snapshots[trades_key] = encode(
                stream_message(
                    trades_key, type="snapshot", seq=tape.seq, ts=last_ts, data=tape.snapshot_data()
                )
            )
        elif state.trades_new:
            messages[trades_key] = encode(
                stream_message(
                    trades_key,
                    type="update",
                    seq=tape.seq,
                    prev_seq=state.trades_prev,
                    ts=last_ts,
                    data={"trades": state.trades_new},
                )
            )
            snapshots[trades_key] = encode(
                stream_message(
                    trades_key, type="snapshot", seq=tape.seq, ts=last_ts, data=tape.snapshot_data()
                )
            )
        if state.candle_in:
            self._drain_candles(state)
        if state.reset or state.candle_in:
            for interval, text in state.candles.items():
                key = f"candles.{symbol}.{interval}"
                messages[key] = snapshots[key] = text
        state.reset = state.book_changed = False
        state.trades_new = []
        state.candle_in = []

    def _book_snapshot(self, state: SymbolState, ts: int | None) -> str:
        key = f"book.{state.symbol}"
        view = state.view
        return encode(
            stream_message(
                key,
                type="snapshot",
                seq=view.seq,
                ts=ts,
                depth=MAX_DEPTH,
                data=view.snapshot_data(),
            )
        )

    def _drain_candles(self, state: SymbolState) -> None:
        changes = state.builder.apply(state.candle_in)
        closed = {(bar.interval, bar.start) for bar in changes.closed}
        by_interval: dict[str, list[Bar]] = {}
        for bar in changes.changed:
            by_interval.setdefault(bar.interval, []).append(bar)
            state.unsaved[(bar.interval, bar.start)] = bar
            if bar.interval == "1m":
                state.day.set(bar.start, _minute(bar))
        for interval, bars in by_interval.items():
            state.candles[interval] = self._candles_text(state, bars, closed)

    def _candles_text(self, state: SymbolState, bars: list[Bar], closed: set) -> str:
        interval = bars[0].interval
        key = f"candles.{state.symbol}.{interval}"
        seq = state.candle_seq[interval] = state.candle_seq.get(interval, 0) + 1
        return encode(
            stream_message(
                key,
                type="update",
                seq=seq,
                ts=state.tape.trades[-1]["ts"] if state.tape.trades else None,
                data={
                    "bars": [
                        bar_message(bar, closed=(bar.interval, bar.start) in closed) for bar in bars
                    ]
                },
            )
        )

    def _drain_tickers(self, messages: dict[str, str], snapshots: dict[str, str]) -> None:
        for symbol in self.venue_dirty:
            channel = f"ticker.{symbol}"
            if channel in self.conflator:
                continue  # a new tick is going anyway
            tick = self.ticks.get(symbol)
            state = self.symbols.get(symbol)
            venue_ts = max(state.venue_ts or 0, state.book_ts or 0) if state else 0
            if tick is not None:
                self.conflator.add(channel, ts=max(tick[0], venue_ts), data=tick[1])
            elif venue_ts:
                # No reference tick yet (no feed): this venue's side of the ticker alone.
                self.conflator.add(channel, ts=venue_ts, data={"symbol": symbol})
        self.venue_dirty.clear()
        now = timezone.now()
        for channel, message in self.conflator.drain().items():
            symbol = channel.partition(".")[2]
            message["data"] = {**message["data"], **self._venue(symbol, now)}
            messages[channel] = snapshots[channel] = encode(message)

    def _venue(self, symbol: str, now: datetime.datetime) -> dict[str, str | None]:
        """This venue's side of a ticker: its best bid and ask, last trade, 24 h figures."""
        tick = self.ticks.get(symbol)
        venue: dict[str, str | None] = {"reference": tick[1]["last"] if tick else None}
        state = self.symbols.get(symbol)
        if state is None:
            return (
                venue
                | dict.fromkeys(
                    ("best_bid", "best_bid_size", "best_ask", "best_ask_size", "last_trade")
                )
                | RollingDay().figures(now)
            )
        bid, ask = state.mirror.best()
        venue |= {
            "best_bid": plain(bid[0]) if bid else None,
            "best_bid_size": plain(bid[1]) if bid else None,
            "best_ask": plain(ask[0]) if ask else None,
            "best_ask_size": plain(ask[1]) if ask else None,
            "last_trade": state.tape.trades[-1]["price"] if state.tape.trades else None,
        }
        return venue | state.day.figures(now)

    def _drain_accounts(self, messages: dict[str, str]) -> None:
        accounts, self.accounts = self.accounts, {}
        ids = list(accounts)
        try:
            balances = balances_of(ids)
            positions = selectors.account_positions(ids)
        except DatabaseError:
            logger.warning("stream: balances and positions unavailable", exc_info=True)
            balances, positions = {}, {}
        for account_id, events in accounts.items():
            key = private_key("orders", account_id)
            messages[key] = encode(
                stream_message(
                    "orders",
                    type="update",
                    seq=events.seq,
                    prev_seq=events.prev,
                    ts=events.ts,
                    data={"orders": list(events.orders.values()), "fills": events.fills},
                )
            )
            if account_id in balances:
                messages[private_key("balances", account_id)] = encode(
                    balances_message(balances[account_id], seq=events.seq, ts=events.ts)
                )
            if account_id in positions:
                messages[private_key("positions", account_id)] = encode(
                    positions_message(positions[account_id], seq=events.seq, ts=events.ts)
                )

    def save_candles(self, now: float | None = None, *, force: bool = False) -> None:
        """Store the bars changed since the last save (every SAVE_CANDLES_EVERY_S)."""
        now = time.monotonic() if now is None else now
        if not force and now - self.saved_at < SAVE_CANDLES_EVERY_S:
            return
        self.saved_at = now
        for state in self.symbols.values():
            if state.unsaved:
                bars, state.unsaved = list(state.unsaved.values()), {}
                try:
                    candles_save(state.instrument, bars)
                except DatabaseError:
                    # Kept for the next save: the database may be away for a moment.
                    for bar in bars:
                        state.unsaved.setdefault((bar.interval, bar.start), bar)
                    logger.warning(
                        "stream: could not store %s candles", state.symbol, exc_info=True
                    )


def balances_message(rows: list, *, seq: int, ts: int | None) -> dict[str, Any]:
    """The `balances` channel's message: every asset the account holds, after a change."""
    return stream_message(
        "balances",
        type="snapshot",
        seq=seq,
        ts=ts,
        data={
            "balances": [
                balance_message(
                    asset=row.asset.code,
                    available=row.available,
                    held=row.held,
                    pending=row.pending,
                )
                for row in rows
            ]
        },
    )


def positions_message(rows: list, *, seq: int, ts: int | None) -> dict[str, Any]:
    """The `positions` channel's message: every position of the account, after a change."""
    return stream_message(
        "positions",
        type="snapshot",
        seq=seq,
        ts=ts,
        data={"positions": [position_message(position) for position in rows]},
    )


def _minute(bar: Bar) -> MinuteBar:
    return MinuteBar(bar.open, bar.high, bar.low, bar.close, bar.volume)
