"""Stop and stop-limit orders: trigger on the last trade price, run after the trigger."""

from __future__ import annotations

import dataclasses

import pytest

from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    Expired,
    OrderBook,
    Rejected,
    Replaced,
    TimeInForce,
    Trade,
    Triggered,
)

from .helpers import BUY, SELL, book_with, limit, market, stop, trades, without_deltas


def traded_at(book: OrderBook, price: int, order_id: int = 900) -> list[object]:
    """Print a 1-lot trade at ``price`` between accounts 8 and 9; return the events."""
    book.submit(limit(order_id, SELL, 1, price, account=8))
    return book.submit(market(order_id + 1, BUY, 1, account=9))


def test_a_stop_waits_without_touching_the_book() -> None:
    book = book_with(limit(1, SELL, 5, 105, account=2))
    assert book.submit(stop(9, BUY, 3, stop_price=103)) == [Accepted(9)]
    assert book.depth(5) == ([], [(105, 5)])
    assert book.open_qty(9) == 3
    view = book.get(9)
    assert view is not None
    assert view.pending
    assert view.stop_price == 103


@pytest.mark.parametrize(
    ("side", "stop_price", "trade_price", "fires"),
    [
        (BUY, 103, 102, False),
        (BUY, 103, 103, True),
        (BUY, 103, 104, True),
        (SELL, 97, 98, False),
        (SELL, 97, 97, True),
        (SELL, 97, 96, True),
    ],
)
def test_stop_triggers_when_the_last_trade_reaches_its_stop_price(
    side, stop_price, trade_price, fires
) -> None:
    book = OrderBook("X")
    book.submit(limit(1, BUY, 10, 50, account=3))  # liquidity for a sell stop
    book.submit(limit(2, SELL, 10, 150, account=3))  # liquidity for a buy stop
    book.submit(stop(9, side, 4, stop_price=stop_price))
    events = traded_at(book, trade_price)
    if fires:
        assert Triggered(9) in events
        fill_price = 150 if side is BUY else 50
        assert (2 if side is BUY else 1, 9, fill_price, 4) in trades(events)
        assert book.open_qty(9) is None
    else:
        assert Triggered(9) not in events
        assert book.open_qty(9) == 4


def test_stops_run_after_the_triggering_order_in_trigger_order() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 1, 100, account=2))
    book.submit(limit(2, SELL, 1, 102, account=2))
    book.submit(limit(3, SELL, 10, 110, account=2))
    book.submit(stop(20, BUY, 1, stop_price=102))  # parked first, higher stop
    book.submit(stop(21, BUY, 1, stop_price=101))
    book.submit(stop(22, BUY, 1, stop_price=101))
    events = without_deltas(book.submit(limit(9, BUY, 3, 104, account=5), 1))
    assert events == [
        Accepted(9),
        Trade(1, 9, 100, 1, BUY, 2, 5, 0, 2, 1, 1),
        Trade(2, 9, 102, 1, BUY, 2, 5, 0, 1, 2, 1),
        # 101 and 102 were both reached at 102: the lower stop first, then time order
        Triggered(21),
        Trade(3, 21, 110, 1, BUY, 2, 1, 9, 0, 3, 1),
        Triggered(22),
        Trade(3, 22, 110, 1, BUY, 2, 1, 8, 0, 4, 1),
        Triggered(20),
        Trade(3, 20, 110, 1, BUY, 2, 1, 7, 0, 5, 1),
    ]
    # the incoming order rested before any stop ran
    full = book.submit(limit(10, BUY, 1, 1, account=5))
    assert full == [Accepted(10), BookDelta(BUY, 1, 1)]
    assert book.depth(5) == ([(104, 1), (1, 1)], [(110, 7)])


def test_triggered_stops_can_trigger_more_stops() -> None:
    book = OrderBook("X")
    book.submit(limit(1, BUY, 1, 99, account=2))
    book.submit(limit(2, BUY, 1, 95, account=2))
    book.submit(limit(3, BUY, 5, 90, account=2))
    book.submit(stop(20, SELL, 1, stop_price=99))
    book.submit(stop(21, SELL, 1, stop_price=95))
    events = without_deltas(book.submit(market(9, SELL, 1, account=5)))
    assert [e for e in events if type(e) is Triggered] == [Triggered(20), Triggered(21)]
    assert trades(events) == [(1, 9, 99, 1), (2, 20, 95, 1), (3, 21, 90, 1)]


@pytest.mark.parametrize(("side", "stop_price"), [(BUY, 100), (BUY, 99), (SELL, 100), (SELL, 101)])
def test_a_stop_submitted_with_its_price_already_reached_triggers_at_once(side, stop_price) -> None:
    book = OrderBook("X")
    traded_at(book, 100)
    book.submit(limit(1, SELL, 5, 103, account=2))
    book.submit(limit(2, BUY, 5, 97, account=2))
    events = book.submit(stop(9, side, 2, stop_price=stop_price), 4)
    assert events[:2] == [Accepted(9), Triggered(9)]
    assert trades(events) == ([(1, 9, 103, 2)] if side is BUY else [(2, 9, 97, 2)])


def test_a_stop_limit_enters_the_book_at_its_limit_when_triggered() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 5, 106, account=2))
    book.submit(stop(9, BUY, 3, stop_price=101, price=104))
    events = traded_at(book, 101)
    assert Triggered(9) in events
    assert events[-1] == BookDelta(BUY, 104, 3)
    view = book.get(9)
    assert view is not None
    assert not view.pending
    assert view.price == 104
    assert book.depth(5) == ([(104, 3)], [(106, 5)])


def test_no_stop_triggers_before_any_trade_or_reference_price() -> None:
    book = OrderBook("X")
    assert book.submit(stop(9, SELL, 3, stop_price=1_000_000)) == [Accepted(9)]
    assert book.last_price is None


def test_reference_price_can_be_set_and_triggers_stops() -> None:
    book = OrderBook("X")
    book.submit(limit(1, BUY, 5, 90, account=2))
    book.submit(stop(9, SELL, 3, stop_price=95))
    book.last_price = 96  # rebuilding: sets the reference without triggering
    assert book.last_price == 96
    assert book.open_qty(9) == 3
    assert book.set_last_price(97) == []
    events = book.set_last_price(95, ts=3)
    assert without_deltas(events) == [
        Triggered(9),
        Trade(1, 9, 90, 3, SELL, 2, 1, 2, 0, 1, 3),
    ]
    with pytest.raises(ValueError, match="invalid last price"):
        book.set_last_price(0)


def test_triggered_stop_with_no_liquidity_is_cancelled() -> None:
    book = OrderBook("X")
    book.submit(stop(9, BUY, 3, stop_price=100))
    events = traded_at(book, 100)
    assert without_deltas(events)[-2:] == [Triggered(9), Canceled(9, 3, 0, "no_liquidity")]


def test_a_pending_stop_can_be_cancelled_fully_or_partly() -> None:
    book = OrderBook("X")
    book.submit(stop(9, BUY, 5, stop_price=100))
    assert book.cancel(9, 2) == [Canceled(9, 2, 3, "user")]
    assert book.open_qty(9) == 3
    assert book.cancel(9) == [Canceled(9, 3, 0, "user")]
    assert book.open_qty(9) is None
    assert Triggered(9) not in traded_at(book, 100)


def test_a_pending_stop_can_be_replaced() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 10, 110, account=2))
    book.submit(stop(9, BUY, 5, stop_price=105, price=112))
    assert book.replace(9, 4, 111, stop_price=103) == [Replaced(9, 4, 111, 5, 112, 103)]
    view = book.get(9)
    assert view is not None
    assert (view.qty, view.price, view.stop_price) == (4, 111, 103)
    events = traded_at(book, 103)
    assert Triggered(9) in events
    assert (1, 9, 110, 4) in trades(events)


def test_replacing_a_stop_to_a_reached_price_triggers_it() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 10, 110, account=2))
    traded_at(book, 100)
    book.submit(stop(9, BUY, 5, stop_price=105))
    events = book.replace(9, 5, stop_price=100)
    assert without_deltas(events)[:2] == [Replaced(9, 5, None, 5, None, 100), Triggered(9)]
    assert (1, 9, 110, 5) in trades(events)


def test_replacing_a_stop_market_with_a_limit_price_is_rejected() -> None:
    book = OrderBook("X")
    book.submit(stop(9, BUY, 5, stop_price=105))
    assert book.replace(9, 5, 110) == [Rejected(9, "invalid_price")]


def test_day_stops_expire() -> None:
    book = OrderBook("X")
    book.submit(stop(9, BUY, 5, stop_price=105, tif=TimeInForce.DAY))
    book.submit(stop(10, BUY, 5, stop_price=105))
    assert book.expire_day() == [Expired(9, 5)]
    assert book.open_qty(10) == 5


def test_stop_limit_post_only_that_would_cross_on_trigger_is_cancelled() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 5, 101, account=2))
    post_only = dataclasses.replace(stop(9, BUY, 2, stop_price=100, price=102), post_only=True)
    assert book.submit(post_only) == [Accepted(9)]
    events = traded_at(book, 100)
    assert without_deltas(events)[-2:] == [
        Triggered(9),
        Canceled(9, 2, 0, "post_only_would_cross"),
    ]
