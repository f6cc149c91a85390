"""Bad commands are rejected with a machine-readable reason; Order() never raises."""

from __future__ import annotations

import pytest

from trading.engine import Accepted, Order, OrderBook, OrderType, Rejected, Side, TimeInForce

from .helpers import BUY, SELL, limit, market, stop

LIMIT, MARKET, STOP, STOP_LIMIT = (
    OrderType.LIMIT,
    OrderType.MARKET,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)
GTC, IOC, FOK, DAY = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (Order(1, 1, BUY, LIMIT, 0, 100), "invalid_qty"),
        (Order(1, 1, BUY, LIMIT, -5, 100), "invalid_qty"),
        (Order(1, 1, BUY, LIMIT, 2.5, 100), "invalid_qty"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, LIMIT, True, 100), "invalid_qty"),
        (Order(1, 1, BUY, LIMIT, None, 100), "invalid_qty"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, MARKET, 0), "invalid_qty"),
        (Order(1, 1, BUY, LIMIT, 5), "no_price"),
        (Order(1, 1, BUY, LIMIT, 5, 0), "invalid_price"),
        (Order(1, 1, BUY, LIMIT, 5, -1), "invalid_price"),
        (Order(1, 1, BUY, LIMIT, 5, 100.0), "invalid_price"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, MARKET, 5, 100), "invalid_price"),
        (Order(1, 1, BUY, STOP, 5, 100, 100), "invalid_price"),
        (Order(1, 1, BUY, STOP, 5), "no_stop_price"),
        (Order(1, 1, BUY, STOP_LIMIT, 5, 100), "no_stop_price"),
        (Order(1, 1, BUY, STOP_LIMIT, 5, None, 100), "no_price"),
        (Order(1, 1, BUY, STOP, 5, None, 0), "invalid_stop_price"),
        (Order(1, 1, BUY, LIMIT, 5, 100, 90), "invalid_stop_price"),
        (Order(1, 1, 1, LIMIT, 5, 100), "invalid_side"),  # type: ignore[arg-type]
        (Order(1, 1, "BUY", LIMIT, 5, 100), "invalid_side"),  # type: ignore[arg-type]
        # submit's fast path checks the side by dispatching on it: a side equal to a member but
        # not one (the book holds an ask at 100), on a limit that would cross or rest and on a
        # market order
        (Order(1, 1, 1, LIMIT, 5, 200), "invalid_side"),  # type: ignore[arg-type]
        (Order(1, 1, 1, LIMIT, 5, 50), "invalid_side"),  # type: ignore[arg-type]
        (Order(1, 1, 1, MARKET, 5), "invalid_side"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, "LIMIT", 5, 100), "invalid_type"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, LIMIT, 5, 100, tif="GTC"), "invalid_tif"),  # type: ignore[arg-type]
        (Order(1, "acc", BUY, LIMIT, 5, 100), "invalid_account"),  # type: ignore[arg-type]
        (Order("1", 1, BUY, LIMIT, 5, 100), "invalid_id"),  # type: ignore[arg-type]
        (Order(1, 1, BUY, MARKET, 5, post_only=True), "invalid_post_only"),
        (Order(1, 1, BUY, LIMIT, 5, 100, tif=IOC, post_only=True), "invalid_post_only"),
        (Order(1, 1, BUY, LIMIT, 5, 100, tif=FOK, post_only=True), "invalid_post_only"),
        (Order(1, 1, BUY, STOP, 5, None, 9, post_only=True), "invalid_post_only"),
        (Order(1, 1, BUY, LIMIT, 5, 100, post_only=1), "invalid_post_only"),  # type: ignore[arg-type]
    ],
)
def test_invalid_orders_are_rejected_and_leave_the_book_alone(order, reason) -> None:
    book = OrderBook("X")
    book.submit(limit(50, SELL, 5, 100, account=2))
    before = book.snapshot()
    assert book.submit(order, 0) == [Rejected(order.id, reason)]
    assert book.snapshot() == before


@pytest.mark.parametrize(
    "first",
    [limit(1, BUY, 5, 90), stop(1, BUY, 5, stop_price=200)],
    ids=["resting", "pending-stop"],
)
def test_an_id_that_is_live_is_a_duplicate(first) -> None:
    book = OrderBook("X")
    book.submit(first)
    assert book.submit(limit(1, SELL, 1, 300)) == [Rejected(1, "duplicate_id")]


@pytest.mark.parametrize(
    "again",
    [
        limit(1, SELL, 1, 300),  # fast path: every other check passes
        market(1, SELL, 1),
        limit(1, SELL, 0, 300),  # invalid qty: a later check than duplicate_id
        limit(1, SELL, 1, -5),  # invalid price
        Order(1, "x", SELL, OrderType.LIMIT, 1, 300),  # type: ignore[arg-type]
        Order(1, 2, SELL, OrderType.LIMIT, 1, 300, tif=TimeInForce.FOK),
    ],
)
def test_duplicate_id_is_found_before_any_later_check(again) -> None:
    # submit validates the common case with one combined check and looks at the id last;
    # the documented order (invalid_id, duplicate_id, then the rest) must still hold.
    book = OrderBook("X")
    book.submit(limit(1, BUY, 5, 90))
    assert book.submit(again) == [Rejected(1, "duplicate_id")]


def test_the_id_of_a_finished_order_can_be_used_again() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 5, 100, account=2))
    book.submit(limit(2, BUY, 5, 100))
    assert book.submit(limit(1, BUY, 1, 90))[0] == Accepted(1)


def test_order_construction_never_validates() -> None:
    order = Order(None, None, None, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert order.qty is None
    assert OrderBook("X").submit(order) == [Rejected(None, "invalid_id")]  # type: ignore[arg-type]


def test_enum_values() -> None:
    assert {s.name for s in Side} == {"BUY", "SELL"}
    assert {t.name for t in OrderType} == {"LIMIT", "MARKET", "STOP", "STOP_LIMIT"}
    assert {t.name for t in TimeInForce} == {"GTC", "IOC", "FOK", "DAY"}
    assert DAY is TimeInForce.DAY
    assert GTC is TimeInForce.GTC
