"""A slow, obviously-correct reference matcher for testing ``OrderBook``.

It keeps every resting order in one flat list and, for each fill, scans the whole list for the
best opposite order by (price, arrival time). It follows the semantics in README.md but emits
no ``BookDelta`` events: tests compare its other events with the engine's, and its depth with
``OrderBook.depth()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trading.engine import (
    Accepted,
    Canceled,
    Expired,
    Order,
    OrderType,
    Rejected,
    Replaced,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, STOP, STOP_LIMIT = (
    OrderType.LIMIT,
    OrderType.MARKET,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)
GTC, IOC, FOK, DAY = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY


@dataclass
class Live:
    """A live order: resting (``pending`` False) or a pending stop."""

    order: Order
    qty: int  # open quantity
    price: int | None
    stop_price: int | None
    time: int  # arrival time in its queue (level or stop bucket)
    pending: bool


def invalid_reason(order: Order) -> str | None:
    """Why ``order`` is invalid (not counting duplicate ids), or None."""
    if type(order.account_id) is not int:
        return "invalid_account"
    if order.side not in (BUY, SELL) or not isinstance(order.side, Side):
        return "invalid_side"
    if type(order.qty) is not int or order.qty <= 0:
        return "invalid_qty"
    if not isinstance(order.tif, TimeInForce):
        return "invalid_tif"
    if not isinstance(order.type, OrderType):
        return "invalid_type"
    if order.type in (LIMIT, STOP_LIMIT):
        if order.price is None:
            return "no_price"
        if type(order.price) is not int or order.price <= 0:
            return "invalid_price"
    elif order.price is not None:
        return "invalid_price"
    if order.type in (STOP, STOP_LIMIT):
        if order.stop_price is None:
            return "no_stop_price"
        if type(order.stop_price) is not int or order.stop_price <= 0:
            return "invalid_stop_price"
    elif order.stop_price is not None:
        return "invalid_stop_price"
    if order.post_only is not False:
        if order.post_only is not True:
            return "invalid_post_only"
        if order.type in (MARKET, STOP) or order.tif in (IOC, FOK):
            return "invalid_post_only"
    return None


@dataclass
class ReferenceBook:
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_NEWEST
    live: dict[int, Live] = field(default_factory=dict)
    last_price: int | None = None
    clock: int = 0
    trade_seq: int = 0
    queue: list[Live] = field(default_factory=list)  # triggered stops waiting to run

    # ------------------------------------------------------------------ helpers

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def resting(self, side: Side) -> list[Live]:
        """Resting orders of ``side``, best first, then by arrival."""
        orders = [x for x in self.live.values() if not x.pending and x.order.side is side]
        if side is BUY:
            return sorted(orders, key=lambda x: (-x.price, x.time))  # type: ignore[operator]
        return sorted(orders, key=lambda x: (x.price, x.time))

    def stops(self) -> list[Live]:
        """Pending stops in trigger priority: buys (lowest stop first), then sells."""
        stops = [x for x in self.live.values() if x.pending]
        buys = sorted(
            (x for x in stops if x.order.side is BUY),
            key=lambda x: (x.stop_price, x.time),
        )
        sells = sorted(
            (x for x in stops if x.order.side is SELL),
            key=lambda x: (-x.stop_price, x.time),  # type: ignore[operator]
        )
        return buys + sells

    @staticmethod
    def crosses(side: Side, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if side is BUY else maker_price >= limit

    def opposite(self, side: Side) -> Side:
        return SELL if side is BUY else BUY

    def would_cross(self, side: Side, limit: int | None) -> bool:
        makers = self.resting(self.opposite(side))
        return bool(makers) and self.crosses(side, limit, makers[0].price)  # type: ignore[arg-type]

    def fillable(self, account: int, side: Side, limit: int | None, want: int) -> int:
        total = 0
        for maker in self.resting(self.opposite(side)):
            if not self.crosses(side, limit, maker.price):  # type: ignore[arg-type]
                break
            if maker.order.account_id == account:
                if self.stp is SelfTradePrevention.CANCEL_OLDEST:
                    continue
                break
            total += maker.qty
            if total >= want:
                break
        return total

    def reached(self, side: Side, stop_price: int) -> bool:
        if self.last_price is None:
            return False
        return self.last_price >= stop_price if side is BUY else self.last_price <= stop_price

    def collect(self, price: int) -> None:
        for stop in self.stops():
            if stop.order.side is BUY and stop.stop_price <= price:  # type: ignore[operator]
                del self.live[stop.order.id]
                self.queue.append(stop)
        for stop in self.stops():
            if stop.order.side is SELL and stop.stop_price >= price:  # type: ignore[operator]
                del self.live[stop.order.id]
                self.queue.append(stop)

    # ------------------------------------------------------------------ matching

    def take(self, taker: Live, events: list[object], ts: int) -> None:
        """Match ``taker`` (not in ``live``) until it is filled, stopped, or out of prices."""
        side = taker.order.side
        while taker.qty:
            makers = self.resting(self.opposite(side))
            if not makers or not self.crosses(side, taker.price, makers[0].price):  # type: ignore[arg-type]
                return
            maker = makers[0]
            if maker.order.account_id == taker.order.account_id:
                if self.stp is not SelfTradePrevention.CANCEL_NEWEST:
                    del self.live[maker.order.id]
                    events.append(Canceled(maker.order.id, maker.qty, 0, "self_trade"))
                if self.stp is not SelfTradePrevention.CANCEL_OLDEST:
                    events.append(Canceled(taker.order.id, taker.qty, 0, "self_trade"))
                    taker.qty = 0
                continue
            fill = min(maker.qty, taker.qty)
            maker.qty -= fill
            taker.qty -= fill
            if not maker.qty:
                del self.live[maker.order.id]
            self.trade_seq += 1
            events.append(
                Trade(
                    maker.order.id,
                    taker.order.id,
                    maker.price,  # type: ignore[arg-type]
                    fill,
                    side,
                    maker.order.account_id,
                    taker.order.account_id,
                    maker.qty,
                    taker.qty,
                    self.trade_seq,
                    ts,
                )
            )
            self.last_price = maker.price
            self.collect(maker.price)  # type: ignore[arg-type]

    def execute(self, item: Live, events: list[object], ts: int, fresh: bool) -> None:
        """Run an order that is not in the book yet: match, then rest or cancel the rest."""
        order = item.order
        crosses = self.would_cross(order.side, item.price)
        if order.post_only and crosses:
            if fresh:
                events.append(Rejected(order.id, "post_only_would_cross"))
            else:
                events.append(Canceled(order.id, item.qty, 0, "post_only_would_cross"))
            return
        if order.tif is FOK and (
            self.fillable(order.account_id, order.side, item.price, item.qty) < item.qty
        ):
            if fresh:
                events.append(Rejected(order.id, "fok_unfillable"))
            else:
                events.append(Canceled(order.id, item.qty, 0, "fok_unfillable"))
            return
        if fresh:
            events.append(Accepted(order.id))
        self.take(item, events, ts)
        if not item.qty:
            return
        if item.price is None:
            events.append(Canceled(order.id, item.qty, 0, "no_liquidity"))
        elif order.tif in (IOC, FOK):
            events.append(Canceled(order.id, item.qty, 0, "ioc_remainder"))
        else:
            item.pending = False
            item.time = self.tick()
            self.live[order.id] = item

    def run_queue(self, events: list[object], ts: int) -> None:
        while self.queue:
            stop = self.queue.pop(0)
            events.append(Triggered(stop.order.id))
            stop.pending = False
            self.execute(stop, events, ts, fresh=False)

    # ------------------------------------------------------------------ commands

    def submit(self, order: Order, ts: int = 0) -> list[object]:
        if type(order.id) is not int:
            return [Rejected(order.id, "invalid_id")]
        if order.id in self.live:
            return [Rejected(order.id, "duplicate_id")]
        reason = invalid_reason(order)
        if reason:
            return [Rejected(order.id, reason)]
        events: list[object] = []
        item = Live(order, order.qty, order.price, order.stop_price, 0, False)
        if order.type in (STOP, STOP_LIMIT):
            events.append(Accepted(order.id))
            item.pending = True
            item.time = self.tick()
            if self.reached(order.side, order.stop_price):  # type: ignore[arg-type]
                self.queue.append(item)
            else:
                self.live[order.id] = item
        else:
            self.execute(item, events, ts, fresh=True)
        self.run_queue(events, ts)
        return events

    def cancel(self, order_id: int, qty: int | None = None, ts: int = 0) -> list[object]:
        item = self.live.get(order_id)
        if item is None:
            return [Rejected(order_id, "unknown_order")]
        if qty is not None and (type(qty) is not int or qty <= 0):
            return [Rejected(order_id, "invalid_qty")]
        if qty is None or qty >= item.qty:
            del self.live[order_id]
            return [Canceled(order_id, item.qty, 0, "user")]
        item.qty -= qty
        return [Canceled(order_id, qty, item.qty, "user")]

    def replace(
        self,
        order_id: int,
        qty: int,
        price: int | None = None,
        ts: int = 0,
        stop_price: int | None = None,
    ) -> list[object]:
        item = self.live.get(order_id)
        if item is None:
            return [Rejected(order_id, "unknown_order")]
        if type(qty) is not int or qty <= 0:
            return [Rejected(order_id, "invalid_qty")]
        order = item.order
        if item.pending:
            if price is not None and (
                order.type is not STOP_LIMIT or type(price) is not int or price <= 0
            ):
                return [Rejected(order_id, "invalid_price")]
            if stop_price is not None and (type(stop_price) is not int or stop_price <= 0):
                return [Rejected(order_id, "invalid_stop_price")]
            new_price = item.price if price is None else price
            new_stop = item.stop_price if stop_price is None else stop_price
            events: list[object] = [
                Replaced(order_id, qty, new_price, item.qty, item.price, new_stop)
            ]
            keep = new_stop == item.stop_price and qty <= item.qty
            item.qty, item.price, item.stop_price = qty, new_price, new_stop
            if keep:
                return events
            item.time = self.tick()
            if self.reached(order.side, new_stop):  # type: ignore[arg-type]
                del self.live[order_id]
                self.queue.append(item)
                self.run_queue(events, ts)
            return events
        if price is not None and (type(price) is not int or price <= 0):
            return [Rejected(order_id, "invalid_price")]
        if stop_price is not None:
            return [Rejected(order_id, "invalid_stop_price")]
        new_price = item.price if price is None else price
        events = [Replaced(order_id, qty, new_price, item.qty, item.price)]
        if new_price == item.price and qty <= item.qty:
            item.qty = qty
            return events
        if order.post_only and self.would_cross(order.side, new_price):
            return [Rejected(order_id, "post_only_would_cross")]
        del self.live[order_id]
        item.qty, item.price = qty, new_price
        self.take(item, events, ts)
        if item.qty:
            item.time = self.tick()
            self.live[order_id] = item
        self.run_queue(events, ts)
        return events

    def expire_day(self, ts: int = 0) -> list[object]:
        events: list[object] = []
        for item in self.resting(BUY) + self.resting(SELL) + self.stops():
            if item.order.tif is DAY:
                del self.live[item.order.id]
                events.append(Expired(item.order.id, item.qty))
        return events

    def set_last_price(self, price: int, ts: int = 0) -> list[object]:
        self.last_price = price
        events: list[object] = []
        self.collect(price)
        self.run_queue(events, ts)
        return events

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        sides = []
        for side in (BUY, SELL):
            levels: dict[int, int] = {}
            for item in self.resting(side):
                levels[item.price] = levels.get(item.price, 0) + item.qty  # type: ignore[index]
            sides.append(list(levels.items()))  # resting() is best first; dicts keep order
        return sides[0], sides[1]
