"""Small builders and checks shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trading.engine import (
    BookDelta,
    Order,
    OrderBook,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)

BUY, SELL = Side.BUY, Side.SELL


def limit(
    order_id: int,
    side: Side,
    qty: int,
    price: int,
    account: int = 1,
    tif: TimeInForce = TimeInForce.GTC,
    post_only: bool = False,
) -> Order:
    return Order(order_id, account, side, OrderType.LIMIT, qty, price, tif=tif, post_only=post_only)


def market(
    order_id: int,
    side: Side,
    qty: int,
    account: int = 1,
    tif: TimeInForce = TimeInForce.GTC,
) -> Order:
    return Order(order_id, account, side, OrderType.MARKET, qty, tif=tif)


def stop(
    order_id: int,
    side: Side,
    qty: int,
    stop_price: int,
    price: int | None = None,
    account: int = 1,
    tif: TimeInForce = TimeInForce.GTC,
) -> Order:
    order_type = OrderType.STOP if price is None else OrderType.STOP_LIMIT
    return Order(order_id, account, side, order_type, qty, price, stop_price, tif)


def trades(events: Iterable[Any]) -> list[tuple[int, int, int, int]]:
    """``(maker, taker, price, qty)`` of each trade."""
    return [
        (e.maker_order_id, e.taker_order_id, e.price, e.qty) for e in events if type(e) is Trade
    ]


def without_deltas(events: Iterable[Any]) -> list[Any]:
    return [e for e in events if type(e) is not BookDelta]


def apply_deltas(
    levels: dict[tuple[Side, int], int], events: Iterable[Any]
) -> dict[tuple[Side, int], int]:
    """Apply the ``BookDelta`` events to a ``(side, price) -> qty`` map."""
    for event in events:
        if type(event) is BookDelta:
            if event.qty:
                levels[event.side, event.price] = event.qty
            else:
                levels.pop((event.side, event.price), None)
    return levels


def depth_from_deltas(
    levels: dict[tuple[Side, int], int],
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    bids = sorted(((p, q) for (s, p), q in levels.items() if s is BUY), reverse=True)
    asks = sorted((p, q) for (s, p), q in levels.items() if s is SELL)
    return bids, asks


def book_with(*orders: Order, **kwargs: Any) -> OrderBook:
    """A book holding ``orders``, submitted in turn (they must not trade)."""
    book = OrderBook("TEST", **kwargs)
    for order in orders:
        events = book.submit(order, 0)
        assert not any(type(e) is Trade for e in events), events
    return book
