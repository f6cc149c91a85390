"""A price-time-priority limit order book for one instrument.

Layout, chosen for CPython speed (docs/performance/engine.md has the measurements):

- Each side is a dict ``price -> _Level`` plus a sorted list of keys (``price`` for bids,
  ``-price`` for asks), so the best level of either side is ``keys[-1]``: a new level is
  inserted with ``bisect.insort`` (usually an append), the best level leaves with ``pop()``.
- A level is a ``deque`` of resting nodes in time priority. A node is a small list
  ``[open_qty, order, level]`` (a list is far cheaper to create and free than an object):
  ``order`` is the caller's frozen ``Order`` (or one the book made for a replace), so the
  node stores nothing else. Cancelling sets ``open_qty`` to 0 and leaves the node in the deque
  ("lazy deletion"); matching drops such nodes, and a level is compacted when they pile up.
  A level's ``total`` is the open quantity of its live nodes, so ``total == 0`` means empty.
- Pending stops sit in per-side buckets ``stop_price -> [stops in time order]`` with a sorted
  key list and a cached "next trigger price", so a trade checks them with one comparison.
- One dict ``_live`` maps every live order id to its node (resting) or ``_Stop`` (pending).

In the hot paths (``submit``, ``cancel``, ``_take``) enum members are compared by identity and
events are built through their slot-compatible builders (see ``events.py``).
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
    Trade,
    TradeBuilder,
    accepted,
    book_delta,
    builder_for,
    canceled,
    expired,
    rejected,
    replaced,
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

_INF = float("inf")
_NEG_INF = -_INF

_USER = Reason.USER
_SELF_TRADE = Reason.SELF_TRADE
_IOC_REMAINDER = Reason.IOC_REMAINDER
_NO_LIQUIDITY = Reason.NO_LIQUIDITY

# A level is compacted (its dead nodes dropped) when its deque grows past ``limit`` nodes;
# the limit then becomes twice the live count, at least _COMPACT_MIN: amortised O(1).
_COMPACT_MIN = 32

SNAPSHOT_VERSION = 1

_OrderBuilder = builder_for(Order)

# Indexes into a resting node ``[open_qty, order, level]``.
_QTY = 0
_ORDER = 1


class _Level(deque):
    """Nodes at one price in time priority, possibly with dead ones (open qty 0)."""

    __slots__ = ("total", "limit")

    total: int  # open quantity of the live nodes; 0 means the level is empty
    limit: int  # compact when the deque grows beyond this


class _Stop:
    """A pending stop or stop-limit order: the order and its open quantity."""

    __slots__ = ("order", "qty")

    def __init__(self, order: Order, qty: int) -> None:
        self.order = order
        self.qty = qty


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


def _check(order: Order) -> str | None:
    """Return why ``order`` is invalid, or None.

    The first failing check wins, in this order: id, account, side, qty, time in force,
    type, price, stop price, post-only.
    """
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


def _amended(order: Order, qty: int, price: int | None, stop_price: int | None) -> Order:
    """Return a copy of ``order`` with new quantity and prices (fast frozen construction)."""
    new = _OrderBuilder()
    new.id = order.id
    new.account_id = order.account_id
    new.side = order.side
    new.type = order.type
    new.qty = qty
    new.price = price
    new.stop_price = stop_price
    new.tif = order.tif
    new.post_only = order.post_only
    new.__class__ = Order
    return new


class OrderBook:
    """A deterministic price-time-priority order book. README.md describes the semantics.

    Every command method takes the caller's timestamp ``ts`` (used only to stamp trades) and
    returns the events it caused, in order. Commands never raise on bad values: they return
    ``Rejected``. ``load_resting``, ``restore`` and the ``last_price`` setter take trusted data
    and raise ``ValueError`` when it is wrong.
    """

    __slots__ = (
        "symbol",
        "stp",
        "_bids",
        "_asks",
        "_bid_keys",
        "_ask_keys",
        "_bid_best",
        "_ask_best",
        "_live",
        "_buy_stops",
        "_sell_stops",
        "_buy_stop_keys",
        "_sell_stop_keys",
        "_buy_trigger",
        "_sell_trigger",
        "_pending",
        "_last_price",
        "_trade_seq",
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
        self._bid_best: float = _NEG_INF  # best bid price, -inf when there is none
        self._ask_best: float = _INF  # best ask price, +inf when there is none
        self._live: dict[int, Any] = {}  # id -> resting node (a list) or _Stop
        self._buy_stops: dict[int, list[_Stop]] = {}
        self._sell_stops: dict[int, list[_Stop]] = {}
        self._buy_stop_keys: list[int] = []  # -stop_price ascending: next to trigger is last
        self._sell_stop_keys: list[int] = []  # stop_price ascending: next to trigger is last
        self._buy_trigger: float = _INF  # lowest buy stop price
        self._sell_trigger: float = _NEG_INF  # highest sell stop price
        self._pending: deque[_Stop] = deque()  # triggered stops waiting to run
        self._last_price: int | None = None
        self._trade_seq = 0

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
        book); ``set_last_price`` sets it and runs the stops it triggers.
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
        return len(self._live)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._live

    def open_qty(self, order_id: int) -> int | None:
        """Return the open quantity of a live order (resting or pending), or None."""
        node = self._live.get(order_id)
        if node is None:
            return None
        return node.qty if type(node) is _Stop else node[_QTY]

    def get(self, order_id: int) -> OrderView | None:
        """Return a view of a live order (resting or pending stop), or None."""
        node = self._live.get(order_id)
        if node is None:
            return None
        if type(node) is _Stop:
            order, qty, pending = node.order, node.qty, True
        else:
            order, qty, pending = node[_ORDER], node[_QTY], False
        return OrderView(
            order.id,
            order.account_id,
            order.side,
            order.type,
            qty,
            order.price,
            order.stop_price,
            order.tif,
            order.post_only,
            pending,
        )

    def orders(self) -> list[OrderView]:
        """Return every live order: bids then asks, best first in time priority, then stops."""
        views = []
        for node in self._resting_in_priority():
            views.append(self.get(node[_ORDER].id))
        for stop in self._stops_in_priority():
            views.append(self.get(stop.order.id))
        return views  # type: ignore[return-value]

    # ------------------------------------------------------------------ submit

    def submit(self, order: Order, ts: int = 0) -> list[Event]:
        """Match ``order`` against the book and rest, cancel or park what is left."""
        oid = order.id
        if type(oid) is not int:
            return [rejected(oid, Reason.INVALID_ID)]
        if oid in self._live:
            return [rejected(oid, Reason.DUPLICATE_ID)]
        # Fast path: limit (GTC, DAY, IOC) and market (not FOK) orders without post-only,
        # validated inline with the same checks as _check (the side by the dispatch on it).
        # Anything else, valid or not, takes the general path, which also finds the reason
        # for a rejection.
        side = order.side
        qty = order.qty
        tif = order.tif
        if (
            type(order.account_id) is not int
            or type(qty) is not int
            or qty <= 0
            or (tif is not _GTC and tif is not _DAY and tif is not _IOC)
            or order.stop_price is not None
            or order.post_only is not False
        ):
            return self._submit_other(order, ts)
        price = order.price
        otype = order.type
        if otype is _LIMIT and type(price) is int and price > 0:
            event = AcceptedBuilder()
            event.order_id = oid
            event.__class__ = Accepted
            # (the side is checked here, by the dispatch on it)
            if side is _BUY:
                if self._ask_best <= price:
                    bound: float = -price  # (-inf, no bound, for a market order)
                    price = None  # it crosses: the taker code below runs it
                else:
                    levels = self._bids
                    keys = self._bid_keys
                    key = price
            elif side is not _SELL:
                return self._submit_other(order, ts)
            elif self._bid_best >= price:
                bound = price
                price = None
            else:
                levels = self._asks
                keys = self._ask_keys
                key = -price
            if price is not None:
                if tif is _IOC:
                    return [event, canceled(oid, qty, 0, _IOC_REMAINDER)]
                # Rest it (an inlined _append).
                level = levels.get(price)
                if level is None:
                    level = _Level()
                    level.total = total = qty
                    level.limit = _COMPACT_MIN
                    levels[price] = level
                    if not keys or key > keys[-1]:  # a new best level
                        keys.append(key)
                        if side is _BUY:
                            self._bid_best = price
                        else:
                            self._ask_best = price
                    else:
                        insort(keys, key)
                else:
                    level.total = total = level.total + qty
                node = [qty, order, level]
                level.append(node)
                self._live[oid] = node
                delta = BookDeltaBuilder()
                delta.side = side
                delta.price = price
                delta.qty = total
                delta.__class__ = BookDelta
                return [event, delta]
        elif otype is _MARKET and price is None and (side is _BUY or side is _SELL):
            event = AcceptedBuilder()
            event.order_id = oid
            event.__class__ = Accepted
            bound = _NEG_INF
        else:
            return self._submit_other(order, ts)
        # A taker: a crossing limit order or a market order (an inlined _submit_taker).
        events: list[Any] = [event]
        qty = self._take(oid, order.account_id, side, bound, qty, events, ts)
        if qty:
            if otype is _MARKET:
                events.append(canceled(oid, qty, 0, _NO_LIQUIDITY))
            elif tif is _IOC:
                events.append(canceled(oid, qty, 0, _IOC_REMAINDER))
            else:
                self._rest(order, qty, events)
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _submit_other(self, order: Order, ts: int) -> list[Event]:
        """Submit any order that is not a plain GTC/DAY limit order."""
        oid = order.id
        reason = _check(order)
        if reason is not None:
            return [rejected(oid, reason)]
        events: list[Event] = []
        otype = order.type
        if otype is _STOP or otype is _STOP_LIMIT:
            events.append(accepted(oid))
            stop = _Stop(order, order.qty)
            if self._reached(order.side, order.stop_price):  # type: ignore[arg-type]
                self._pending.append(stop)
            else:
                self._park(stop)
        else:
            self._execute(order, order.qty, events, ts, True)
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _execute(self, order: Order, qty: int, events: list[Any], ts: int, fresh: bool) -> None:
        """Run a valid order that is not in the book yet (a market order has price None).

        ``fresh`` orders have not been accepted: a post-only or FOK failure rejects them.
        Triggered stops were accepted when parked: such a failure cancels them instead.
        """
        oid = order.id
        side = order.side
        price = order.price
        if side is _BUY:
            opposite = self._ask_keys
            bound = _NEG_INF if price is None else -price
        else:
            opposite = self._bid_keys
            bound = _NEG_INF if price is None else price
        crosses = bool(opposite) and opposite[-1] >= bound
        tif = order.tif
        if order.post_only and crosses:
            if fresh:
                events.append(rejected(oid, Reason.POST_ONLY_WOULD_CROSS))
            else:
                events.append(canceled(oid, qty, 0, Reason.POST_ONLY_WOULD_CROSS))
            return
        if tif is _FOK and (not crosses or self._fillable(order, bound, qty) < qty):
            if fresh:
                events.append(rejected(oid, Reason.FOK_UNFILLABLE))
            else:
                events.append(canceled(oid, qty, 0, Reason.FOK_UNFILLABLE))
            return
        if fresh:
            events.append(accepted(oid))
        if crosses:
            qty = self._take(oid, order.account_id, side, bound, qty, events, ts)
            if not qty:
                return
        if price is None:
            events.append(canceled(oid, qty, 0, _NO_LIQUIDITY))
        elif tif is _IOC or tif is _FOK:
            events.append(canceled(oid, qty, 0, _IOC_REMAINDER))
        else:
            self._rest(order, qty, events)

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

        ``bound`` is the worst acceptable opposite *key*: ``-limit`` for a buy, ``limit`` for
        a sell, -inf for a market order. When self-trade prevention cancels the incoming
        order, its ``Canceled`` event is emitted here and 0 is returned.
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
        live = self._live
        trade_seq = self._trade_seq
        append = events.append
        while keys:
            key = keys[-1]
            if key < bound:
                break
            price = key * sign
            level = levels[price]
            start_total = total = level.total
            start_seq = trade_seq
            while True:
                node = level[0]
                maker_qty = node[0]
                if not maker_qty:  # dead: left behind by a cancel
                    level.popleft()
                    continue
                maker = node[1]
                if maker.account_id == taccount:
                    total, qty = self._prevent_self_trade(node, level, total, tid, qty, events)
                    if not qty or not total:
                        break
                    continue
                trade = TradeBuilder()
                if maker_qty <= qty:
                    qty -= maker_qty
                    total -= maker_qty
                    trade.qty = maker_qty
                    trade.maker_remaining = 0
                    level.popleft()
                    del live[maker.id]
                else:
                    node[0] = trade.maker_remaining = maker_qty - qty
                    total -= qty
                    trade.qty = qty
                    qty = 0
                trade_seq += 1
                trade.maker_order_id = maker.id
                trade.taker_order_id = tid
                trade.price = price
                trade.aggressor_side = side
                trade.maker_account_id = maker.account_id
                trade.taker_account_id = taccount
                trade.taker_remaining = qty
                trade.seq = trade_seq
                trade.ts = ts
                trade.__class__ = Trade
                append(trade)
                if not qty or not total:
                    break
            if total != start_total:
                level.total = total
                delta = BookDeltaBuilder()
                delta.side = maker_side
                delta.price = price
                delta.qty = total
                delta.__class__ = BookDelta
                append(delta)
                if not total:
                    keys.pop()
                    del levels[price]
                    level.clear()  # drop dead nodes (they point back at the level)
            if trade_seq != start_seq:
                self._last_price = price
                if price >= self._buy_trigger or price <= self._sell_trigger:
                    self._collect_triggers(price)
            if not qty:
                break
        self._trade_seq = trade_seq
        if side is _BUY:
            self._ask_best = -keys[-1] if keys else _INF
        else:
            self._bid_best = keys[-1] if keys else _NEG_INF
        return qty

    def _prevent_self_trade(
        self, node: list[Any], level: _Level, total: int, tid: int, qty: int, events: list[Any]
    ) -> tuple[int, int]:
        """Apply the STP mode when the incoming order meets its own account's node at the
        head of ``level``; return the level's new total and the incoming open quantity."""
        stp = self.stp
        if stp is not _CANCEL_NEWEST:  # CANCEL_OLDEST or CANCEL_BOTH: the resting one goes
            maker_qty = node[0]
            node[0] = 0
            level.popleft()
            del self._live[node[1].id]
            total -= maker_qty
            events.append(canceled(node[1].id, maker_qty, 0, _SELF_TRADE))
        if stp is not _CANCEL_OLDEST:  # CANCEL_NEWEST or CANCEL_BOTH: the incoming one goes
            events.append(canceled(tid, qty, 0, _SELF_TRADE))
            qty = 0
        return total, qty

    def _fillable(self, order: Order, bound: float, want: int) -> int:
        """Return how much of ``want`` the incoming ``order`` could fill (counting up to
        ``want``), stopping where self-trade prevention would stop it."""
        if order.side is _BUY:
            keys = self._ask_keys
            levels = self._asks
            sign = -1
        else:
            keys = self._bid_keys
            levels = self._bids
            sign = 1
        account = order.account_id
        skip_own = self.stp is _CANCEL_OLDEST
        total = 0
        for key in reversed(keys):
            if key < bound:
                break
            for node in levels[key * sign]:
                if not node[_QTY]:
                    continue
                if node[_ORDER].account_id == account:
                    if skip_own:
                        continue
                    return total
                total += node[_QTY]
                if total >= want:
                    return total
        return total

    def _rest(self, order: Order, qty: int, events: list[Any]) -> None:
        """Put ``qty`` of a live order at the back of its price level."""
        total = self._append([qty, order, None])
        events.append(book_delta(order.side, order.price, total))  # type: ignore[arg-type]

    def _append(self, node: list[Any]) -> int:
        """Add a node at the back of its level; return the level's new total."""
        order = node[_ORDER]
        price = order.price
        side = order.side
        if side is _BUY:
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
            level.total = node[_QTY]
            level.limit = _COMPACT_MIN
            levels[price] = level
            insort(keys, key)
            if side is _BUY:
                self._bid_best = keys[-1]
            else:
                self._ask_best = -keys[-1]
        else:
            level.total += node[_QTY]
        node[2] = level
        level.append(node)
        self._live[order.id] = node
        return level.total

    def _remove(self, node: list[Any]) -> int:
        """Take a resting node out of the book; return its level's new total."""
        order = node[_ORDER]
        del self._live[order.id]
        qty = node[_QTY]
        node[_QTY] = 0
        level = node[2]
        level.total = total = level.total - qty
        if not total:
            self._drop_level(order.side, order.price, level)
        elif len(level) > level.limit:
            self._compact(level)
        return total

    def _drop_level(self, side: Side, price: int, level: _Level) -> None:
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
            if side is _BUY:
                self._bid_best = keys[-1] if keys else _NEG_INF
            else:
                self._ask_best = -keys[-1] if keys else _INF
        else:
            del keys[bisect_left(keys, key)]
        level.clear()  # drop dead nodes (they point back at the level)

    @staticmethod
    def _compact(level: _Level) -> None:
        alive = [node for node in level if node[0]]
        level.clear()
        level.extend(alive)
        level.limit = max(_COMPACT_MIN, 2 * len(alive))

    # ------------------------------------------------------------------ cancel

    def cancel(self, order_id: int, qty: int | None = None, ts: int = 0) -> list[Event]:
        """Cancel a live order, or reduce it by ``qty`` keeping its place in the queue.

        ``qty`` at or above the open quantity (or None) removes the order.
        """
        if qty is None:
            node = self._live.pop(order_id, None)
            if type(node) is list:
                # Fast path: remove a resting order (an inlined _remove).
                open_qty = node[0]
                node[0] = 0
                level = node[2]
                level.total = total = level.total - open_qty
                order = node[1]
                if not total:
                    self._drop_level(order.side, order.price, level)
                elif len(level) > level.limit:
                    self._compact(level)
                event = CanceledBuilder()
                event.order_id = order_id
                event.qty = open_qty
                event.remaining = 0
                event.reason = _USER
                event.__class__ = Canceled
                delta = BookDeltaBuilder()
                delta.side = order.side
                delta.price = order.price
                delta.qty = total
                delta.__class__ = BookDelta
                return [event, delta]
            if node is None:
                return [rejected(order_id, Reason.UNKNOWN_ORDER)]
            self._live[order_id] = node  # a pending stop: put it back for _cancel_other
        return self._cancel_other(order_id, qty)

    def _cancel_other(self, order_id: int, qty: int | None) -> list[Event]:
        """Cancel a pending stop, or reduce any live order."""
        node = self._live.get(order_id)
        if node is None:
            return [rejected(order_id, Reason.UNKNOWN_ORDER)]
        if qty is not None and (type(qty) is not int or qty <= 0):
            return [rejected(order_id, Reason.INVALID_QTY)]
        if type(node) is _Stop:
            open_qty = node.qty
            if qty is None or qty >= open_qty:
                self._unpark(node)
                return [canceled(order_id, open_qty, 0, _USER)]
            node.qty = open_qty - qty
            return [canceled(order_id, qty, node.qty, _USER)]
        open_qty = node[_QTY]
        order = node[_ORDER]
        if qty is None or qty >= open_qty:
            total = self._remove(node)
            return [
                canceled(order_id, open_qty, 0, _USER),
                book_delta(order.side, order.price, total),
            ]
        node[_QTY] = open_qty - qty
        level = node[2]
        level.total -= qty
        return [
            canceled(order_id, qty, open_qty - qty, _USER),
            book_delta(order.side, order.price, level.total),
        ]

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

        ``price`` None keeps the limit price; ``stop_price`` (pending stops only) None keeps
        the trigger price. Priority is kept when the price is unchanged and the quantity does
        not grow; otherwise the order goes to the back of its (new) level, trading first if it
        now crosses. A post-only order that would cross is rejected and left as it was.
        """
        node = self._live.get(order_id)
        if node is None:
            return [rejected(order_id, Reason.UNKNOWN_ORDER)]
        if type(qty) is not int or qty <= 0:
            return [rejected(order_id, Reason.INVALID_QTY)]
        if type(node) is _Stop:
            return self._replace_stop(node, qty, price, stop_price, ts)
        order: Order = node[_ORDER]
        old_price: int = order.price  # type: ignore[assignment]
        if price is None:
            price = old_price
        elif type(price) is not int or price <= 0:
            return [rejected(order_id, Reason.INVALID_PRICE)]
        if stop_price is not None:
            return [rejected(order_id, Reason.INVALID_STOP_PRICE)]
        old_qty = node[_QTY]
        side = order.side
        if price == old_price and qty <= old_qty:
            events: list[Event] = [replaced(order_id, qty, price, old_qty, old_price)]
            if qty < old_qty:
                node[_QTY] = qty
                level = node[2]
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
        if crosses and order.post_only:
            return [rejected(order_id, Reason.POST_ONLY_WOULD_CROSS)]
        events = [replaced(order_id, qty, price, old_qty, old_price)]
        events.append(book_delta(side, old_price, self._remove(node)))
        new_order = _amended(order, qty, price, order.stop_price)
        if crosses:
            qty = self._take(order_id, order.account_id, side, bound, qty, events, ts)
        if qty:
            self._rest(new_order, qty, events)
        if self._pending:
            self._run_pending(events, ts)
        return events

    def _replace_stop(
        self, stop: _Stop, qty: int, price: int | None, stop_price: int | None, ts: int
    ) -> list[Event]:
        order = stop.order
        old_price = order.price
        if price is None:
            price = old_price
        elif order.type is not _STOP_LIMIT or type(price) is not int or price <= 0:
            return [rejected(order.id, Reason.INVALID_PRICE)]
        old_stop_price: int = order.stop_price  # type: ignore[assignment]
        if stop_price is None:
            stop_price = old_stop_price
        elif type(stop_price) is not int or stop_price <= 0:
            return [rejected(order.id, Reason.INVALID_STOP_PRICE)]
        old_qty = stop.qty
        events: list[Event] = [replaced(order.id, qty, price, old_qty, old_price, stop_price)]
        new_order = _amended(order, qty, price, stop_price)
        if stop_price == old_stop_price and qty <= old_qty:
            stop.order = new_order  # same bucket, same place
            stop.qty = qty
            return events
        self._unpark(stop)
        stop = _Stop(new_order, qty)
        if self._reached(order.side, stop_price):
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
        order = stop.order
        stop_price: int = order.stop_price  # type: ignore[assignment]
        self._live[order.id] = stop
        if order.side is _BUY:
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
        order = stop.order
        stop_price: int = order.stop_price  # type: ignore[assignment]
        del self._live[order.id]
        if order.side is _BUY:
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
            if order.side is _BUY:
                self._buy_trigger = -keys[-1] if keys else _INF
            else:
                self._sell_trigger = keys[-1] if keys else _NEG_INF

    def _collect_triggers(self, price: int) -> None:
        """Queue every pending stop that a trade at ``price`` triggers.

        Buy stops go first, lowest stop price first; then sell stops, highest first; stops at
        one stop price in time order.
        """
        pending = self._pending
        live = self._live
        keys = self._buy_stop_keys
        if keys and -keys[-1] <= price:
            buckets = self._buy_stops
            while keys and -keys[-1] <= price:
                for stop in buckets.pop(-keys.pop()):
                    del live[stop.order.id]
                    pending.append(stop)
            self._buy_trigger = -keys[-1] if keys else _INF
        keys = self._sell_stop_keys
        if keys and keys[-1] >= price:
            buckets = self._sell_stops
            while keys and keys[-1] >= price:
                for stop in buckets.pop(keys.pop()):
                    del live[stop.order.id]
                    pending.append(stop)
            self._sell_trigger = keys[-1] if keys else _NEG_INF

    def _run_pending(self, events: list[Any], ts: int) -> None:
        """Run triggered stops in trigger order, including those they trigger in turn."""
        pending = self._pending
        while pending:
            stop = pending.popleft()
            events.append(triggered(stop.order.id))
            self._execute(stop.order, stop.qty, events, ts, False)

    def _stops_in_priority(self) -> list[_Stop]:
        """Pending stops: buys in trigger order, then sells in trigger order."""
        result: list[_Stop] = []
        for key in reversed(self._buy_stop_keys):
            result.extend(self._buy_stops[-key])
        for key in reversed(self._sell_stop_keys):
            result.extend(self._sell_stops[key])
        return result

    def _resting_in_priority(self) -> list[list[Any]]:
        """Live resting nodes: bids then asks, best level first, in time priority."""
        result: list[list[Any]] = []
        for keys, levels, sign in (
            (self._bid_keys, self._bids, 1),
            (self._ask_keys, self._asks, -1),
        ):
            for key in reversed(keys):
                result.extend(node for node in levels[key * sign] if node[_QTY])
        return result

    def set_last_price(self, price: int, ts: int = 0) -> list[Event]:
        """Set the reference price (e.g. from a feed) and run the stops it triggers.

        Raises ValueError if ``price`` is not a positive int.
        """
        self.last_price = price
        events: list[Event] = []
        if price >= self._buy_trigger or price <= self._sell_trigger:
            self._collect_triggers(price)
            self._run_pending(events, ts)
        return events

    # ------------------------------------------------------------------ expiry

    def expire_day(self, ts: int = 0) -> list[Event]:
        """Expire every DAY order: resting ones in book order, then pending stops."""
        events: list[Event] = []
        for node in self._resting_in_priority():
            order = node[_ORDER]
            if order.tif is _DAY:
                qty = node[_QTY]
                total = self._remove(node)
                events.append(expired(order.id, qty))
                events.append(book_delta(order.side, order.price, total))
        for stop in self._stops_in_priority():
            if stop.order.tif is _DAY:
                self._unpark(stop)
                events.append(expired(stop.order.id, stop.qty))
        return events

    # ------------------------------------------------------------------ rebuild

    def load_resting(self, order: Order, qty: int | None = None) -> None:
        """Put an already-accepted order back without matching (rebuilding from storage).

        Call it in priority order. ``qty`` is the open quantity (default ``order.qty``).
        A limit order joins the back of its level; a stop becomes a pending stop and does not
        trigger. Raises ValueError for an invalid, duplicate or crossing order, or one that
        could never rest (market, IOC, FOK).
        """
        reason = _check(order)
        if reason is not None:
            raise ValueError(f"order {order.id!r}: {reason}")
        if order.id in self._live:
            raise ValueError(f"order {order.id!r}: {Reason.DUPLICATE_ID}")
        if qty is None:
            qty = order.qty
        elif type(qty) is not int or qty <= 0:
            raise ValueError(f"order {order.id!r}: {Reason.INVALID_QTY}")
        otype = order.type
        if otype is _STOP or otype is _STOP_LIMIT:
            self._park(_Stop(order, qty))
            return
        if otype is not _LIMIT or order.tif is _IOC or order.tif is _FOK:
            raise ValueError(f"order {order.id!r}: a {otype.name} {order.tif.name} cannot rest")
        price: int = order.price  # type: ignore[assignment]
        if order.side is _BUY:
            crosses = bool(self._ask_keys) and -self._ask_keys[-1] <= price
        else:
            crosses = bool(self._bid_keys) and self._bid_keys[-1] >= price
        if crosses:
            raise ValueError(f"order {order.id!r}: would cross the book")
        self._append([qty, order, None])

    def snapshot(self) -> dict[str, Any]:
        """Return the book's state as plain JSON-serialisable data."""
        return {
            "version": SNAPSHOT_VERSION,
            "symbol": self.symbol,
            "stp": self.stp.name,
            "last_price": self._last_price,
            "trade_seq": self._trade_seq,
            "resting": [
                _order_row(node[_ORDER], node[_QTY]) for node in self._resting_in_priority()
            ],
            "stops": [_order_row(stop.order, stop.qty) for stop in self._stops_in_priority()],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> OrderBook:
        """Rebuild the book that ``snapshot()`` described.

        Raises ValueError (or KeyError) on a snapshot it did not make.
        """
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snapshot.get('version')!r}")
        book = cls(snapshot["symbol"], SelfTradePrevention[snapshot["stp"]])
        for row in snapshot["resting"]:
            order, qty = _order_from_row(row)
            if order.id in book._live:
                raise ValueError(f"duplicate order {order.id!r} in snapshot")
            book._append([qty, order, None])
        for row in snapshot["stops"]:
            order, qty = _order_from_row(row)
            if order.id in book._live:
                raise ValueError(f"duplicate order {order.id!r} in snapshot")
            book._park(_Stop(order, qty))
        book.last_price = snapshot["last_price"]
        book._trade_seq = snapshot["trade_seq"]
        return book

    def _verify(self) -> None:
        """Check the internal invariants (for tests): raise AssertionError when one fails."""
        resting = 0
        for levels, keys, sign in (
            (self._bids, self._bid_keys, 1),
            (self._asks, self._ask_keys, -1),
        ):
            if sorted(keys) != keys or len(set(keys)) != len(keys):
                raise AssertionError("keys out of order")
            if sorted(levels) != sorted(key * sign for key in keys):
                raise AssertionError("keys and levels disagree")
            for price, level in levels.items():
                live = [node for node in level if node[_QTY]]
                if not live or level.total != sum(node[_QTY] for node in live):
                    raise AssertionError(f"level {price} total is wrong")
                for node in live:
                    if node[2] is not level or node[_ORDER].price != price:
                        raise AssertionError(f"node {node[_ORDER].id} is misplaced")
                    if self._live.get(node[_ORDER].id) is not node:
                        raise AssertionError(f"node {node[_ORDER].id} is not live")
                resting += len(live)
        if self._bid_best != (self._bid_keys[-1] if self._bid_keys else _NEG_INF):
            raise AssertionError("cached best bid is stale")
        if self._ask_best != (-self._ask_keys[-1] if self._ask_keys else _INF):
            raise AssertionError("cached best ask is stale")
        stops = self._stops_in_priority()
        if resting + len(stops) != len(self._live) or self._pending:
            raise AssertionError("live map out of step")
        for stop in stops:
            if self._live.get(stop.order.id) is not stop:
                raise AssertionError(f"stop {stop.order.id} is not live")
        buy = [s.order.stop_price or 0 for s in stops if s.order.side is _BUY]
        sell = [s.order.stop_price or 0 for s in stops if s.order.side is _SELL]
        if self._buy_trigger != (min(buy) if buy else _INF):
            raise AssertionError("buy trigger is stale")
        if self._sell_trigger != (max(sell) if sell else _NEG_INF):
            raise AssertionError("sell trigger is stale")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrderBook):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.symbol!r}, bids={len(self._bid_keys)} levels, "
            f"asks={len(self._ask_keys)} levels, live orders={len(self._live)})"
        )


def _order_row(order: Order, qty: int) -> dict[str, Any]:
    return {
        "id": order.id,
        "account_id": order.account_id,
        "side": order.side.name,
        "type": order.type.name,
        "qty": qty,
        "price": order.price,
        "stop_price": order.stop_price,
        "tif": order.tif.name,
        "post_only": order.post_only,
    }


def _order_from_row(row: dict[str, Any]) -> tuple[Order, int]:
    order = Order(
        row["id"],
        row["account_id"],
        Side[row["side"]],
        OrderType[row["type"]],
        row["qty"],
        row["price"],
        row["stop_price"],
        TimeInForce[row["tif"]],
        row["post_only"],
    )
    reason = _check(order)
    if reason is not None:
        raise ValueError(f"order {order.id!r} in snapshot: {reason}")
    return order, row["qty"]
