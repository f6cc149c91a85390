"""A price-time-priority limit order book for one instrument.

Layout, chosen for CPython speed (see README.md for the measurements):

- each side is a dict ``price -> _Level`` plus a sorted list of keys (``price`` for bids,
  ``-price`` for asks) so that the best level of either side is always ``keys[-1]``;
  a new level is inserted with ``bisect.insort``, the best level is removed with ``pop()``;
- a level is a ``deque`` of ``_Resting`` nodes in time priority. Cancelling sets the node's
  open quantity to 0 and leaves it in the deque ("lazy deletion"); matching skips and drops
  such nodes, and a level with many of them is compacted;
- pending stops sit in per-side buckets ``stop_price -> [stops in time order]`` with a sorted
  key list and a cached "next trigger price" so a trade checks them with one comparison.

Comments in the hot paths (``submit``, ``cancel``, ``_take``) explain the tricks: enum members
are compared by identity, events are built through their slot-compatible builders (see
``events.py``), and work is inlined where a call would cost more than the work.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import Any

from trading.engine.events import (
    Accepted,
    AcceptedBuilder,
    BookDelta,
    BookDeltaBuilder,
    Canceled,
    CanceledBuilder,
    Event,
    Replaced,
    Trade,
    TradeBuilder,
    accepted,
    book_delta,
    canceled,
    expired,
    rejected,
    triggered,
)
from trading.engine.types import Order, OrderType, Reason, SelfTradePrevention, Side, TimeInForce

__all__ = ["OrderBook", "OrderView"]

# Enum members cached as module globals: the hot path compares them by identity.
_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_STOP = OrderType.STOP
_STOP_LIMIT = OrderType.STOP_LIMIT
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_DAY = TimeInForce.DAY
_CANCEL_NEWEST = SelfTradePrevention.CANCEL_NEWEST
_CANCEL_OLDEST = SelfTradePrevention.CANCEL_OLDEST
_CANCEL_BOTH = SelfTradePrevention.CANCEL_BOTH

_INF = float("inf")
_NEG_INF = -_INF

# Reasons as module globals, so the hot path does not look them up on a class.
_USER = Reason.USER
_SELF_TRADE = Reason.SELF_TRADE
_IOC_REMAINDER = Reason.IOC_REMAINDER
_NO_LIQUIDITY = Reason.NO_LIQUIDITY

# A level whose deque holds more than 2 * live + _COMPACT_SLACK nodes is compacted.
_COMPACT_SLACK = 16

SNAPSHOT_VERSION = 1


class _Level(deque):  # type: ignore[type-arg]
    """Orders at one price in time priority; may contain dead nodes (qty == 0)."""

    __slots__ = ("total", "live")

    total: int  # open quantity of the live nodes
    live: int  # number of live nodes


class _Resting:
    """A live order in the book. ``qty`` is its open quantity; 0 marks a dead node."""

    __slots__ = ("id", "account", "side", "price", "qty", "tif", "post_only", "seq", "level")

    id: int
    account: int
    side: Side
    price: int
    qty: int
    tif: TimeInForce
    post_only: bool
    seq: int  # priority stamp: lower entered its level earlier
    level: _Level


class _Stop:
    """A pending stop or stop-limit order."""

    __slots__ = (
        "id",
        "account",
        "side",
        "type",
        "qty",
        "price",
        "stop_price",
        "tif",
        "post_only",
        "seq",
    )

    id: int
    account: int
    side: Side
    type: OrderType
    qty: int
    price: int | None
    stop_price: int
    tif: TimeInForce
    post_only: bool
    seq: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """A read-only view of a live order: resting (``pending=False``) or a pending stop."""

    id: int
    account_id: int
    side: Side
    type: OrderType
    qty: int  # open quantity
    price: int | None
    stop_price: int | None
    tif: TimeInForce
    post_only: bool
    pending: bool
    seq: int


def _check(order: Order) -> str | None:
    """Return why ``order`` is invalid, or None. The first failing check wins, in this order:
    id, account, side, qty, tif, type, price, stop price, post-only."""
    if type(order.id) is not int:
        return Reason.INVALID_ID
    if type(order.account_id) is not int:
        return Reason.INVALID_ACCOUNT
    side = order.side
    if side is not _BUY and side is not _SELL:
        return Reason.INVALID_SIDE
    qty = order.qty
    if type(qty) is not int or qty <= 0:
        return Reason.INVALID_QTY
    tif = order.tif
    if tif is not _GTC and tif is not _IOC and tif is not _FOK and tif is not _DAY:
        return Reason.INVALID_TIF
    order_type = order.type
    price = order.price
    stop_price = order.stop_price
    if order_type is _LIMIT or order_type is _STOP_LIMIT:
        if price is None:
            return Reason.NO_PRICE
        if type(price) is not int or price <= 0:
            return Reason.INVALID_PRICE
    elif order_type is _MARKET or order_type is _STOP:
        if price is not None:
            return Reason.INVALID_PRICE
    else:
        return Reason.INVALID_TYPE
    if order_type is _STOP or order_type is _STOP_LIMIT:
        if stop_price is None:
            return Reason.NO_STOP_PRICE
        if type(stop_price) is not int or stop_price <= 0:
            return Reason.INVALID_STOP_PRICE
    elif stop_price is not None:
        return Reason.INVALID_STOP_PRICE
    post_only = order.post_only
    if post_only is not False:
        if post_only is not True:
            return Reason.INVALID_POST_ONLY
        # A maker-only order must be able to rest: a limit price and a resting time in force.
        if order_type is _MARKET or order_type is _STOP or tif is _IOC or tif is _FOK:
            return Reason.INVALID_POST_ONLY
    return None


class OrderBook:
    """A deterministic price-time-priority order book. See README.md for the semantics.

    Every public method takes the caller's timestamp ``ts`` (used only to stamp trades) and
    returns the events it caused, in order. None of them raises on bad input except
    ``load_resting`` and ``restore``, which take trusted data.
    """

    __slots__ = (
        "symbol",
        "stp",
        "_bids",
        "_asks",
        "_bid_keys",
        "_ask_keys",
        "_orders",
        "_stops",
        "_buy_stops",
        "_sell_stops",
        "_buy_stop_keys",
        "_sell_stop_keys",
        "_buy_trigger",
        "_sell_trigger",
        "_pending",
        "_last_price",
        "_trade_seq",
        "_seq",
    )

    def __init__(
        self, symbol: str, stp: SelfTradePrevention = SelfTradePrevention.CANCEL_NEWEST
    ) -> None:
        self.symbol = symbol
        self.stp = SelfTradePrevention(stp)
        self._bids: dict[int, _Level] = {}
        self._asks: dict[int, _Level] = {}
        self._bid_keys: list[int] = []  # bid prices ascending: best is last
        self._ask_keys: list[int] = []  # negated ask prices ascending: best is last
        self._orders: dict[int, _Resting] = {}
        self._stops: dict[int, _Stop] = {}
        self._buy_stops: dict[int, list[_Stop]] = {}
        self._sell_stops: dict[int, list[_Stop]] = {}
        self._buy_stop_keys: list[int] = []  # -stop_price ascending: next to trigger is last
        self._sell_stop_keys: list[int] = []  # stop_price ascending: next to trigger is last
        self._buy_trigger: float = _INF  # lowest buy stop price
        self._sell_trigger: float = _NEG_INF  # highest sell stop price
        self._pending: deque[_Stop] = deque()  # triggered stops waiting to run
        self._last_price: int | None = None
        self._trade_seq = 0
        self._seq = 0

    # ------------------------------------------------------------------ reading

    def best_bid(self) -> tuple[int, int] | None:
        """Return the best bid as ``(price, total_qty)``, or None."""
        keys = self._bid_keys
        if not keys:
            return None
        price = keys[-1]
        return price, self._bids[price].total

    def best_ask(self) -> tuple[int, int] | None:
        """Return the best ask as ``(price, total_qty)``, or None."""
        keys = self._ask_keys
        if not keys:
            return None
        price = -keys[-1]
        return price, self._asks[price].total

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Return ``(bids, asks)`` as ``(price, total_qty)`` lists, best first.

        ``levels`` limits each side; None returns every level.
        """
        bid_keys = self._bid_keys
        ask_keys = self._ask_keys
        if levels is not None:
            if levels <= 0:
                return [], []
            bid_keys = bid_keys[-levels:]
            ask_keys = ask_keys[-levels:]
        bids = self._bids
        asks = self._asks
        return (
            [(price, bids[price].total) for price in reversed(bid_keys)],
            [(-key, asks[-key].total) for key in reversed(ask_keys)],
        )

    @property
    def last_price(self) -> int | None:
        """The last trade price, which stops trigger on; None before the first trade.

        Assigning it sets the reference price without triggering anything (for rebuilding a
        book); ``set_last_price`` sets it and triggers the stops it reaches.
        """
        return self._last_price

    @last_price.setter
    def last_price(self, price: int | None) -> None:
        if price is not None and (type(price) is not int or price <= 0):
            raise ValueError(f"invalid last price {price!r}")
        self._last_price = price

    @property
    def trade_seq(self) -> int:
        """The ``seq`` of the last trade (0 before the first)."""
        return self._trade_seq

    def __len__(self) -> int:
        """Return the number of live orders, resting or pending."""
        return len(self._orders) + len(self._stops)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders or order_id in self._stops

    def open_qty(self, order_id: int) -> int | None:
        """Return the open quantity of a live order (resting or pending), or None."""
        node = self._orders.get(order_id)
        if node is not None:
            return node.qty
        stop = self._stops.get(order_id)
        return None if stop is None else stop.qty

    def get(self, order_id: int) -> OrderView | None:
        """Return a view of a live order (resting or pending stop), or None."""
        node = self._orders.get(order_id)
        if node is not None:
            return OrderView(
                node.id,
                node.account,
                node.side,
                _LIMIT,
                node.qty,
                node.price,
                None,
                node.tif,
                node.post_only,
                False,
                node.seq,
            )
        stop = self._stops.get(order_id)
        if stop is None:
            return None
        return OrderView(
            stop.id,
            stop.account,
            stop.side,
            stop.type,
            stop.qty,
            stop.price,
            stop.stop_price,
            stop.tif,
            stop.post_only,
            True,
            stop.seq,
        )

    def orders(self) -> list[OrderView]:
        """Return every live order: bids then asks best first in time priority, then stops."""
        views: list[OrderView] = []
        for keys, levels, sign in (
            (self._bid_keys, self._bids, 1),
            (self._ask_keys, self._asks, -1),
        ):
            for key in reversed(keys):
                for node in levels[key * sign]:
                    if node.qty:
                        view = self.get(node.id)
                        assert view is not None
                        views.append(view)
        for stop in self._stops_in_priority():
            view = self.get(stop.id)
            assert view is not None
            views.append(view)
        return views

    # ------------------------------------------------------------------ submit

    def submit(self, order: Order, ts: int = 0) -> list[Event]:
        """Match ``order`` against the book and rest, cancel or park what is left."""
        oid = order.id
        if type(oid) is not int:
            return [rejected(oid, Reason.INVALID_ID)]
        if oid in self._orders or oid in self._stops:
            return [rejected(oid, Reason.DUPLICATE_ID)]
        otype = order.type
        tif = order.tif
        if otype is not _LIMIT or (tif is not _GTC and tif is not _DAY) or order.post_only:
            return self._submit_general(order, ts)
        # Fast path: a plain GTC or DAY limit order. Validate inline (same order as _check).
        account = order.account_id
        side = order.side
        qty = order.qty
        price = order.price
        if (
            type(account) is not int
            or (side is not _BUY and side is not _SELL)
            or type(qty) is not int
            or qty <= 0
            or type(price) is not int
            or price <= 0
            or order.stop_price is not None
            or order.post_only is not False
        ):
            reason = _check(order)
            assert reason is not None
            return [rejected(oid, reason)]

        event = AcceptedBuilder()
        event.order_id = oid
        event.__class__ = Accepted
        events: list[Any] = [event]

        if side is _BUY:
            opposite = self._ask_keys
            if opposite and opposite[-1] >= -price:
                qty = self._take(oid, account, side, -price, qty, events, ts)
                if not qty:
                    if self._pending:
                        self._run_pending(events, ts)
                    return events
            levels = self._bids
            keys = self._bid_keys
            key = price
        else:
            opposite = self._bid_keys
            if opposite and opposite[-1] >= price:
                qty = self._take(oid, account, side, price, qty, events, ts)
                if not qty:
                    if self._pending:
                        self._run_pending(events, ts)
                    return events
            levels = self._asks
            keys = self._ask_keys
            key = -price

        # Rest the remainder (inlined _rest).
        node = _Resting()
        node.id = oid
        node.account = account
        node.side = side
        node.price = price
        node.qty = qty
        node.tif = tif
        node.post_only = False
        seq = self._seq + 1
        self._seq = seq
        node.seq = seq
        level = levels.get(price)
        if level is None:
            level = _Level()
            level.total = total = qty
            level.live = 1
            levels[price] = level
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        else:
            level.total = total = level.total + qty
            level.live += 1
        level.append(node)
        node.level = level
        self._orders[oid] = node
        delta = BookDeltaBuilder()
        delta.side = side
        delta.price = price
        delta.qty = total
        delta.__class__ = BookDelta
        events.append(delta)
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _submit_general(self, order: Order, ts: int) -> list[Event]:
        """Submit any order type (the fast path in ``submit`` handles plain limits)."""
        oid = order.id
        reason = _check(order)
        if reason is not None:
            return [rejected(oid, reason)]
        otype = order.type
        if otype is _STOP or otype is _STOP_LIMIT:
            stop = _Stop()
            stop.id = oid
            stop.account = order.account_id
            stop.side = order.side
            stop.type = otype
            stop.qty = order.qty
            stop.price = order.price
            stop.stop_price = order.stop_price  # type: ignore[assignment]
            stop.tif = order.tif
            stop.post_only = order.post_only
            self._seq += 1
            stop.seq = self._seq
            events: list[Event] = [accepted(oid)]
            if self._reached(stop.side, stop.stop_price):
                self._pending.append(stop)
                self._run_pending(events, ts)
            else:
                self._park(stop)
            return events
        events = []
        self._execute(
            oid,
            order.account_id,
            order.side,
            order.price,
            order.qty,
            order.tif,
            order.post_only,
            events,
            ts,
            True,
        )
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _execute(
        self,
        oid: int,
        account: int,
        side: Side,
        price: int | None,
        qty: int,
        tif: TimeInForce,
        post_only: bool,
        events: list[Event],
        ts: int,
        fresh: bool,
    ) -> None:
        """Run a validated order (``price`` None = market) that is not in the book yet.

        ``fresh`` orders have not been accepted: a post-only or FOK failure rejects them.
        Triggered stops were accepted when parked: such a failure cancels them instead.
        """
        if side is _BUY:
            opposite = self._ask_keys
            bound = _NEG_INF if price is None else -price
        else:
            opposite = self._bid_keys
            bound = _NEG_INF if price is None else price
        crosses = bool(opposite) and opposite[-1] >= bound
        if post_only and crosses:
            if fresh:
                events.append(rejected(oid, Reason.POST_ONLY_WOULD_CROSS))
            else:
                events.append(canceled(oid, qty, 0, Reason.POST_ONLY_WOULD_CROSS))
            return
        if tif is _FOK and (not crosses or self._fillable(account, side, bound, qty) < qty):
            if fresh:
                events.append(rejected(oid, Reason.FOK_UNFILLABLE))
            else:
                events.append(canceled(oid, qty, 0, Reason.FOK_UNFILLABLE))
            return
        if fresh:
            events.append(accepted(oid))
        if crosses:
            qty = self._take(oid, account, side, bound, qty, events, ts)
            if not qty:
                return
        if price is None:
            events.append(canceled(oid, qty, 0, _NO_LIQUIDITY))
        elif tif is _IOC or tif is _FOK:
            events.append(canceled(oid, qty, 0, _IOC_REMAINDER))
        else:
            self._rest(oid, account, side, price, qty, tif, post_only, events)

    # ------------------------------------------------------------------ matching

    def _take(
        self,
        tid: int,
        taccount: int,
        side: Side,
        bound: float,
        qty: int,
        events: list[Any],
        ts: int,
    ) -> int:
        """Match ``qty`` of an incoming order against the opposite side; return what is left.

        ``bound`` is the worst acceptable opposite *key* (``-limit`` for a buy, ``limit`` for a
        sell, -inf for a market order). If self-trade prevention cancels the incoming order,
        its ``Canceled`` event is emitted here and 0 is returned.
        """
        if side is _BUY:
            keys = self._ask_keys
            levels = self._asks
            maker_side = _SELL
            sign = -1
        else:
            keys = self._bid_keys
            levels = self._bids
            maker_side = _BUY
            sign = 1
        orders = self._orders
        trade_seq = self._trade_seq
        append = events.append
        while keys:
            key = keys[-1]
            if key < bound:
                break
            price = key * sign
            level = levels[price]
            total = level.total
            traded = False
            while True:
                node = level[0]
                maker_qty = node.qty
                if not maker_qty:  # dead node left by a cancel
                    level.popleft()
                    continue
                if node.account == taccount:
                    stp = self.stp
                    if stp is not _CANCEL_NEWEST:
                        # CANCEL_OLDEST or CANCEL_BOTH: the resting order goes.
                        node.qty = 0
                        level.popleft()
                        del orders[node.id]
                        level.live -= 1
                        total -= maker_qty
                        append(canceled(node.id, maker_qty, 0, _SELF_TRADE))
                    if stp is not _CANCEL_OLDEST:
                        append(canceled(tid, qty, 0, _SELF_TRADE))
                        qty = 0
                        break
                    if not level.live:
                        break
                    continue
                if maker_qty <= qty:
                    qty -= maker_qty
                    fill = maker_qty
                    maker_qty = 0
                    node.qty = 0
                    level.popleft()
                    del orders[node.id]
                    level.live -= 1
                else:
                    maker_qty -= qty
                    node.qty = maker_qty
                    fill = qty
                    qty = 0
                total -= fill
                trade_seq += 1
                traded = True
                trade = TradeBuilder()
                trade.maker_order_id = node.id
                trade.taker_order_id = tid
                trade.price = price
                trade.qty = fill
                trade.aggressor_side = side
                trade.maker_account_id = node.account
                trade.taker_account_id = taccount
                trade.maker_remaining = maker_qty
                trade.taker_remaining = qty
                trade.seq = trade_seq
                trade.ts = ts
                trade.__class__ = Trade
                append(trade)
                if not qty or not level.live:
                    break
            if total != level.total:
                level.total = total
                delta = BookDeltaBuilder()
                delta.side = maker_side
                delta.price = price
                delta.qty = total
                delta.__class__ = BookDelta
                append(delta)
            if not level.live:
                keys.pop()
                del levels[price]
            if traded:
                self._last_price = price
                if price >= self._buy_trigger or price <= self._sell_trigger:
                    self._collect_triggers(price)
            if not qty:
                break
        self._trade_seq = trade_seq
        return qty

    def _fillable(self, account: int, side: Side, bound: float, want: int) -> int:
        """Return how much of ``want`` an incoming order could fill (at least up to ``want``),
        stopping where self-trade prevention would stop it."""
        if side is _BUY:
            keys = self._ask_keys
            levels = self._asks
            sign = -1
        else:
            keys = self._bid_keys
            levels = self._bids
            sign = 1
        skip_own = self.stp is _CANCEL_OLDEST
        total = 0
        for key in reversed(keys):
            if key < bound:
                break
            for node in levels[key * sign]:
                if not node.qty:
                    continue
                if node.account == account:
                    if skip_own:
                        continue
                    return total
                total += node.qty
                if total >= want:
                    return total
        return total

    def _rest(
        self,
        oid: int,
        account: int,
        side: Side,
        price: int,
        qty: int,
        tif: TimeInForce,
        post_only: bool,
        events: list[Any],
    ) -> None:
        """Put a live order at the back of its price level."""
        node = _Resting()
        node.id = oid
        node.account = account
        node.side = side
        node.price = price
        node.qty = qty
        node.tif = tif
        node.post_only = post_only
        self._seq += 1
        node.seq = self._seq
        self._append(node)
        events.append(book_delta(side, price, node.level.total))

    def _append(self, node: _Resting) -> None:
        price = node.price
        if node.side is _BUY:
            levels = self._bids
            keys = self._bid_keys
            key = price
        else:
            levels = self._asks
            keys = self._ask_keys
            key = -price
        level = levels.get(price)
        if level is None:
            level = _Level()
            level.total = node.qty
            level.live = 1
            levels[price] = level
            insort(keys, key)
        else:
            level.total += node.qty
            level.live += 1
        level.append(node)
        node.level = level
        self._orders[node.id] = node

    def _remove(self, node: _Resting) -> int:
        """Take a live node out of the book; return the level's new total."""
        qty = node.qty
        node.qty = 0
        del self._orders[node.id]
        level = node.level
        level.total = total = level.total - qty
        level.live = live = level.live - 1
        if not live:
            self._drop_level(node.side, node.price)
        elif len(level) > 2 * live + _COMPACT_SLACK:
            alive = [n for n in level if n.qty]
            level.clear()
            level.extend(alive)
        return total

    def _drop_level(self, side: Side, price: int) -> None:
        if side is _BUY:
            levels = self._bids
            keys = self._bid_keys
            key = price
        else:
            levels = self._asks
            keys = self._ask_keys
            key = -price
        del levels[price]
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    # ------------------------------------------------------------------ cancel

    def cancel(self, order_id: int, qty: int | None = None, ts: int = 0) -> list[Event]:
        """Cancel a live order, or reduce it by ``qty`` keeping its place in the queue.

        ``qty`` at or above the open quantity (or None) removes the order.
        """
        node = self._orders.get(order_id)
        if node is None:
            return self._cancel_stop(order_id, qty)
        open_qty = node.qty
        if qty is not None and (type(qty) is not int or qty <= 0):
            return [rejected(order_id, Reason.INVALID_QTY)]
        if qty is None or qty >= open_qty:
            # Inlined _remove.
            node.qty = 0
            del self._orders[order_id]
            level = node.level
            level.total = total = level.total - open_qty
            level.live = live = level.live - 1
            if not live:
                self._drop_level(node.side, node.price)
            elif len(level) > 2 * live + _COMPACT_SLACK:
                alive = [n for n in level if n.qty]
                level.clear()
                level.extend(alive)
            event = CanceledBuilder()
            event.order_id = order_id
            event.qty = open_qty
            event.remaining = 0
            event.reason = _USER
            event.__class__ = Canceled
            delta = BookDeltaBuilder()
            delta.side = node.side
            delta.price = node.price
            delta.qty = total
            delta.__class__ = BookDelta
            return [event, delta]
        node.qty = remaining = open_qty - qty
        level = node.level
        level.total -= qty
        return [
            canceled(order_id, qty, remaining, _USER),
            book_delta(node.side, node.price, level.total),
        ]

    def _cancel_stop(self, order_id: int, qty: int | None) -> list[Event]:
        stop = self._stops.get(order_id)
        if stop is None:
            return [rejected(order_id, Reason.UNKNOWN_ORDER)]
        if qty is not None and (type(qty) is not int or qty <= 0):
            return [rejected(order_id, Reason.INVALID_QTY)]
        open_qty = stop.qty
        if qty is None or qty >= open_qty:
            self._unpark(stop)
            return [canceled(order_id, open_qty, 0, _USER)]
        stop.qty = open_qty - qty
        return [canceled(order_id, qty, stop.qty, _USER)]

    # ------------------------------------------------------------------ replace

    def replace(
        self,
        order_id: int,
        qty: int,
        price: int | None = None,
        ts: int = 0,
        *,
        stop_price: int | None = None,
    ) -> list[Event]:
        """Set a live order's open quantity to ``qty`` and its limit price to ``price``.

        ``price`` None keeps the current limit price; ``stop_price`` (pending stops only) None
        keeps the trigger price. Priority is kept when the price is unchanged and the quantity
        does not grow; otherwise the order goes to the back of its (new) level, matching first
        if it now crosses. A post-only order that would cross is rejected and left unchanged.
        """
        node = self._orders.get(order_id)
        if node is None:
            return self._replace_stop(order_id, qty, price, stop_price, ts)
        if type(qty) is not int or qty <= 0:
            return [rejected(order_id, Reason.INVALID_QTY)]
        old_price = node.price
        if price is None:
            price = old_price
        elif type(price) is not int or price <= 0:
            return [rejected(order_id, Reason.INVALID_PRICE)]
        if stop_price is not None:
            return [rejected(order_id, Reason.INVALID_STOP_PRICE)]
        old_qty = node.qty
        side = node.side
        if price == old_price and qty <= old_qty:
            events: list[Event] = [Replaced(order_id, qty, price, old_qty, old_price)]
            if qty < old_qty:
                node.qty = qty
                level = node.level
                level.total -= old_qty - qty
                events.append(book_delta(side, price, level.total))
            return events
        if side is _BUY:
            opposite = self._ask_keys
            bound = -price
        else:
            opposite = self._bid_keys
            bound = price
        crosses = bool(opposite) and opposite[-1] >= bound
        if crosses and node.post_only:
            return [rejected(order_id, Reason.POST_ONLY_WOULD_CROSS)]
        events = [Replaced(order_id, qty, price, old_qty, old_price)]
        events.append(book_delta(side, old_price, self._remove(node)))
        if crosses:
            qty = self._take(order_id, node.account, side, bound, qty, events, ts)
        if qty:
            self._rest(order_id, node.account, side, price, qty, node.tif, node.post_only, events)
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _replace_stop(
        self,
        order_id: int,
        qty: int,
        price: int | None,
        stop_price: int | None,
        ts: int,
    ) -> list[Event]:
        stop = self._stops.get(order_id)
        if stop is None:
            return [rejected(order_id, Reason.UNKNOWN_ORDER)]
        if type(qty) is not int or qty <= 0:
            return [rejected(order_id, Reason.INVALID_QTY)]
        old_price = stop.price
        if price is None:
            price = old_price
        elif stop.type is not _STOP_LIMIT or type(price) is not int or price <= 0:
            return [rejected(order_id, Reason.INVALID_PRICE)]
        old_stop_price = stop.stop_price
        if stop_price is None:
            stop_price = old_stop_price
        elif type(stop_price) is not int or stop_price <= 0:
            return [rejected(order_id, Reason.INVALID_STOP_PRICE)]
        old_qty = stop.qty
        events: list[Event] = [Replaced(order_id, qty, price, old_qty, old_price, stop_price)]
        if stop_price == old_stop_price and qty <= old_qty:
            stop.qty = qty
            stop.price = price
            return events
        self._unpark(stop)
        stop.qty = qty
        stop.price = price
        stop.stop_price = stop_price
        self._seq += 1
        stop.seq = self._seq
        if self._reached(stop.side, stop_price):
            self._pending.append(stop)
            self._run_pending(events, ts)
        else:
            self._park(stop)
        return events

    # ------------------------------------------------------------------ stops

    def _reached(self, side: Side, stop_price: int) -> bool:
        last = self._last_price
        if last is None:
            return False
        return last >= stop_price if side is _BUY else last <= stop_price

    def _park(self, stop: _Stop) -> None:
        """Add a pending stop behind the others at its stop price."""
        stop_price = stop.stop_price
        self._stops[stop.id] = stop
        if stop.side is _BUY:
            bucket = self._buy_stops.get(stop_price)
            if bucket is None:
                self._buy_stops[stop_price] = [stop]
                insort(self._buy_stop_keys, -stop_price)
                self._buy_trigger = -self._buy_stop_keys[-1]
            else:
                bucket.append(stop)
        else:
            bucket = self._sell_stops.get(stop_price)
            if bucket is None:
                self._sell_stops[stop_price] = [stop]
                insort(self._sell_stop_keys, stop_price)
                self._sell_trigger = self._sell_stop_keys[-1]
            else:
                bucket.append(stop)

    def _unpark(self, stop: _Stop) -> None:
        """Remove a pending stop."""
        stop_price = stop.stop_price
        del self._stops[stop.id]
        if stop.side is _BUY:
            buckets = self._buy_stops
            keys = self._buy_stop_keys
            key = -stop_price
        else:
            buckets = self._sell_stops
            keys = self._sell_stop_keys
            key = stop_price
        bucket = buckets[stop_price]
        bucket.remove(stop)
        if not bucket:
            del buckets[stop_price]
            del keys[bisect_left(keys, key)]
            if stop.side is _BUY:
                self._buy_trigger = -keys[-1] if keys else _INF
            else:
                self._sell_trigger = keys[-1] if keys else _NEG_INF

    def _collect_triggers(self, price: int) -> None:
        """Queue every pending stop that a trade at ``price`` triggers.

        Buy stops go first, lowest stop price first; then sell stops, highest first; stops at
        the same price in time order.
        """
        pending = self._pending
        stops = self._stops
        keys = self._buy_stop_keys
        if keys and -keys[-1] <= price:
            buckets = self._buy_stops
            while keys and -keys[-1] <= price:
                for stop in buckets.pop(-keys.pop()):
                    del stops[stop.id]
                    pending.append(stop)
            self._buy_trigger = -keys[-1] if keys else _INF
        keys = self._sell_stop_keys
        if keys and keys[-1] >= price:
            buckets = self._sell_stops
            while keys and keys[-1] >= price:
                for stop in buckets.pop(keys.pop()):
                    del stops[stop.id]
                    pending.append(stop)
            self._sell_trigger = keys[-1] if keys else _NEG_INF

    def _run_pending(self, events: list[Any], ts: int) -> None:
        """Run triggered stops in trigger order, including those they trigger in turn."""
        pending = self._pending
        while pending:
            stop = pending.popleft()
            events.append(triggered(stop.id))
            self._execute(
                stop.id,
                stop.account,
                stop.side,
                stop.price,  # None for a stop (market) order
                stop.qty,
                stop.tif,
                stop.post_only,
                events,
                ts,
                False,
            )

    def _stops_in_priority(self) -> list[_Stop]:
        """Pending stops: buys in trigger order, then sells in trigger order."""
        result: list[_Stop] = []
        for key in reversed(self._buy_stop_keys):
            result.extend(self._buy_stops[-key])
        for key in reversed(self._sell_stop_keys):
            result.extend(self._sell_stops[key])
        return result

    def set_last_price(self, price: int, ts: int = 0) -> list[Event]:
        """Set the reference price (e.g. from a feed) and run the stops it triggers."""
        if type(price) is not int or price <= 0:
            raise ValueError(f"invalid last price {price!r}")
        self._last_price = price
        events: list[Event] = []
        if price >= self._buy_trigger or price <= self._sell_trigger:
            self._collect_triggers(price)
            self._run_pending(events, ts)
        return events

    # ------------------------------------------------------------------ expiry

    def expire_day(self, ts: int = 0) -> list[Event]:
        """Expire every DAY order, resting or pending, in priority-stamp order."""
        day: list[_Resting | _Stop] = [n for n in self._orders.values() if n.tif is _DAY]
        day.extend(s for s in self._stops.values() if s.tif is _DAY)
        day.sort(key=lambda n: n.seq)
        events: list[Event] = []
        for item in day:
            if isinstance(item, _Resting):
                qty = item.qty
                total = self._remove(item)
                events.append(expired(item.id, qty))
                events.append(book_delta(item.side, item.price, total))
            else:
                self._unpark(item)
                events.append(expired(item.id, item.qty))
        return events

    # ------------------------------------------------------------------ rebuild

    def load_resting(self, order: Order, qty: int | None = None) -> None:
        """Put an already-accepted order back without matching (rebuilding from storage).

        Call it in priority order. ``qty`` is the open quantity (default ``order.qty``).
        A limit order joins the back of its level; a stop becomes a pending stop and does not
        trigger. Raises ValueError for an invalid, duplicate or crossing order, or one that
        could never have rested (market, IOC, FOK).
        """
        reason = _check(order)
        if reason is not None:
            raise ValueError(f"order {order.id!r}: {reason}")
        if order.id in self:
            raise ValueError(f"order {order.id!r}: {Reason.DUPLICATE_ID}")
        if qty is None:
            qty = order.qty
        elif type(qty) is not int or qty <= 0:
            raise ValueError(f"order {order.id!r}: {Reason.INVALID_QTY}")
        otype = order.type
        if otype is _STOP or otype is _STOP_LIMIT:
            stop = _Stop()
            stop.id = order.id
            stop.account = order.account_id
            stop.side = order.side
            stop.type = otype
            stop.qty = qty
            stop.price = order.price
            stop.stop_price = order.stop_price  # type: ignore[assignment]
            stop.tif = order.tif
            stop.post_only = order.post_only
            self._seq += 1
            stop.seq = self._seq
            self._park(stop)
            return
        if otype is not _LIMIT or order.tif is _IOC or order.tif is _FOK:
            raise ValueError(f"order {order.id!r}: cannot rest")
        price = order.price
        assert price is not None
        if order.side is _BUY:
            crosses = bool(self._ask_keys) and -self._ask_keys[-1] <= price
        else:
            crosses = bool(self._bid_keys) and self._bid_keys[-1] >= price
        if crosses:
            raise ValueError(f"order {order.id!r}: would cross the book")
        self._rest(
            order.id,
            order.account_id,
            order.side,
            price,
            qty,
            order.tif,
            order.post_only,
            [],
        )

    def snapshot(self) -> dict[str, Any]:
        """Return the book's state as plain JSON-serialisable data."""
        resting: dict[str, list[dict[str, Any]]] = {}
        for name, keys, levels, sign in (
            ("bids", self._bid_keys, self._bids, 1),
            ("asks", self._ask_keys, self._asks, -1),
        ):
            rows: list[dict[str, Any]] = []
            for key in reversed(keys):
                for node in levels[key * sign]:
                    if node.qty:
                        rows.append(
                            {
                                "id": node.id,
                                "account_id": node.account,
                                "price": node.price,
                                "qty": node.qty,
                                "tif": node.tif.name,
                                "post_only": node.post_only,
                                "seq": node.seq,
                            }
                        )
            resting[name] = rows
        stops = [
            {
                "id": stop.id,
                "account_id": stop.account,
                "side": stop.side.name,
                "type": stop.type.name,
                "qty": stop.qty,
                "price": stop.price,
                "stop_price": stop.stop_price,
                "tif": stop.tif.name,
                "post_only": stop.post_only,
                "seq": stop.seq,
            }
            for stop in self._stops_in_priority()
        ]
        return {
            "version": SNAPSHOT_VERSION,
            "symbol": self.symbol,
            "stp": self.stp.name,
            "last_price": self._last_price,
            "trade_seq": self._trade_seq,
            "seq": self._seq,
            "bids": resting["bids"],
            "asks": resting["asks"],
            "stops": stops,
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> OrderBook:
        """Rebuild the book ``snapshot()`` described. Raises ValueError on a bad snapshot."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snapshot.get('version')!r}")
        book = cls(snapshot["symbol"], SelfTradePrevention[snapshot["stp"]])
        for name, side in (("bids", _BUY), ("asks", _SELL)):
            for row in snapshot[name]:
                node = _Resting()
                node.id = row["id"]
                node.account = row["account_id"]
                node.side = side
                node.price = row["price"]
                node.qty = row["qty"]
                node.tif = TimeInForce[row["tif"]]
                node.post_only = row["post_only"]
                node.seq = row["seq"]
                if node.id in book:
                    raise ValueError(f"duplicate order {node.id!r} in snapshot")
                book._append(node)
        for row in snapshot["stops"]:
            stop = _Stop()
            stop.id = row["id"]
            stop.account = row["account_id"]
            stop.side = Side[row["side"]]
            stop.type = OrderType[row["type"]]
            stop.qty = row["qty"]
            stop.price = row["price"]
            stop.stop_price = row["stop_price"]
            stop.tif = TimeInForce[row["tif"]]
            stop.post_only = row["post_only"]
            stop.seq = row["seq"]
            if stop.id in book:
                raise ValueError(f"duplicate order {stop.id!r} in snapshot")
            book._park(stop)
        book._last_price = snapshot["last_price"]
        book._trade_seq = snapshot["trade_seq"]
        book._seq = snapshot["seq"]
        return book

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrderBook):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.symbol!r}, bids={len(self._bid_keys)} levels, "
            f"asks={len(self._ask_keys)} levels, orders={len(self)})"
        )
