"""Snapshot / restore, rebuilding from stored orders, and reading order state."""

from __future__ import annotations

import json

import pytest

from trading.engine import (
    Accepted,
    BookDelta,
    OrderBook,
    OrderType,
    SelfTradePrevention,
    TimeInForce,
)

from .helpers import BUY, SELL, limit, market, stop, trades


def busy_book() -> OrderBook:
    book = OrderBook("SNAP", stp=SelfTradePrevention.CANCEL_BOTH)
    book.submit(limit(1, SELL, 5, 101, account=2))
    book.submit(limit(2, SELL, 5, 101, account=3, tif=TimeInForce.DAY))
    book.submit(limit(3, BUY, 5, 99, account=4, post_only=True))
    book.submit(market(4, BUY, 2, account=5), 3)
    book.submit(stop(5, SELL, 2, stop_price=95, price=94, account=6))
    book.submit(stop(6, BUY, 2, stop_price=105, account=6, tif=TimeInForce.DAY))
    book.cancel(2, 1)
    return book


def test_snapshot_is_json_data_and_restore_gives_an_equal_book() -> None:
    book = busy_book()
    snapshot = book.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    restored = OrderBook.restore(json.loads(json.dumps(snapshot)))
    assert restored == book
    assert restored.depth() == book.depth()
    assert restored.last_price == 101
    assert restored.trade_seq == 1
    assert restored.stp is SelfTradePrevention.CANCEL_BOTH
    assert restored.get(1) == book.get(1)


def test_a_restored_book_behaves_exactly_like_the_original() -> None:
    book = busy_book()
    restored = OrderBook.restore(book.snapshot())
    commands = [
        ("submit", market(10, BUY, 7, account=9), 5),
        ("submit", market(11, SELL, 4, account=9), 6),
        ("expire_day", 7),
        ("submit", limit(12, SELL, 1, 90, account=9), 8),
    ]
    for name, *args in commands:
        assert getattr(book, name)(*args) == getattr(restored, name)(*args)
    assert book == restored


def test_books_with_different_priority_are_not_equal() -> None:
    first = OrderBook("X")
    first.submit(limit(1, SELL, 5, 101))
    first.submit(limit(2, SELL, 5, 101))
    second = OrderBook("X")
    second.submit(limit(2, SELL, 5, 101))
    second.submit(limit(1, SELL, 5, 101))
    assert first.depth() == second.depth()
    assert first != second


def test_restore_refuses_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="version"):
        OrderBook.restore({"version": 99})


def test_load_resting_rebuilds_in_priority_order_without_trading() -> None:
    book = OrderBook("X")
    book.load_resting(limit(7, SELL, 10, 101, account=2), qty=4)  # partly filled before
    book.load_resting(limit(3, SELL, 5, 101, account=3))
    book.load_resting(limit(9, BUY, 5, 99, account=3))
    book.load_resting(stop(11, SELL, 2, stop_price=95))
    book.last_price = 100
    assert book.depth() == ([(99, 5)], [(101, 9)])
    assert book.open_qty(7) == 4
    assert book.open_qty(11) == 2
    assert trades(book.submit(limit(20, BUY, 6, 101))) == [(7, 20, 101, 4), (3, 20, 101, 2)]


@pytest.mark.parametrize(
    "order",
    [
        limit(1, BUY, 5, 101),  # would cross the ask at 101
        market(1, BUY, 5),
        limit(1, BUY, 5, 90, tif=TimeInForce.IOC),
        limit(1, BUY, 0, 90),
        limit(2, BUY, 5, 90),  # duplicate
    ],
)
def test_load_resting_refuses_what_could_not_be_resting(order) -> None:
    book = OrderBook("X")
    book.load_resting(limit(2, SELL, 5, 101))
    with pytest.raises(ValueError, match="order"):
        book.load_resting(order)


def test_get_and_orders_describe_live_orders() -> None:
    book = busy_book()
    view = book.get(1)
    assert view is not None
    assert (view.id, view.account_id, view.side, view.type, view.qty, view.price) == (
        1,
        2,
        SELL,
        OrderType.LIMIT,
        3,
        101,
    )
    assert not view.pending
    assert book.get(4) is None
    assert book.open_qty(4) is None
    assert [v.id for v in book.orders()] == [3, 1, 2, 6, 5]  # stops: buys first
    assert len(book) == 5
    assert 5 in book
    assert 4 not in book


def test_same_commands_give_same_events() -> None:
    def run() -> list[object]:
        book = OrderBook("X")
        out = []
        out += book.submit(limit(1, SELL, 5, 101, account=2), 1)
        out += book.submit(stop(2, BUY, 5, stop_price=101, account=3), 2)
        out += book.submit(limit(3, BUY, 2, 101, account=4), 3)
        out += book.submit(limit(4, SELL, 9, 103, account=5), 4)
        return out

    first = run()
    assert first == run()
    assert first[:2] == [Accepted(1), BookDelta(SELL, 101, 5)]
