"""Cancel (full and partial) and replace: queue position, crossing, post-only."""

from __future__ import annotations

import pytest

from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    Rejected,
    Replaced,
    Trade,
)

from .helpers import BUY, SELL, book_with, limit, trades, without_deltas


def three_asks():
    return book_with(
        limit(1, SELL, 5, 100, account=2),
        limit(2, SELL, 5, 100, account=3),
        limit(3, SELL, 5, 100, account=4),
    )


def test_cancel_removes_a_resting_order() -> None:
    book = three_asks()
    assert book.cancel(2, ts=5) == [Canceled(2, 5, 0, "user"), BookDelta(SELL, 100, 10)]
    assert book.open_qty(2) is None
    assert book.depth(1) == ([], [(100, 10)])


def test_cancelling_the_last_order_of_a_level_removes_the_level() -> None:
    book = book_with(limit(1, SELL, 5, 100), limit(2, SELL, 5, 101))
    assert book.cancel(1) == [Canceled(1, 5, 0, "user"), BookDelta(SELL, 100, 0)]
    assert book.best_ask() == (101, 5)


def test_partial_cancel_reduces_and_keeps_queue_position() -> None:
    book = three_asks()
    assert book.cancel(1, 3) == [Canceled(1, 3, 2, "user"), BookDelta(SELL, 100, 12)]
    assert book.open_qty(1) == 2
    events = book.submit(limit(9, BUY, 4, 100), 0)
    assert trades(events) == [(1, 9, 100, 2), (2, 9, 100, 2)]


@pytest.mark.parametrize("qty", [5, 6, 1000])
def test_cancel_qty_at_or_above_open_removes_the_order(qty) -> None:
    book = three_asks()
    assert book.cancel(1, qty)[0] == Canceled(1, 5, 0, "user")
    assert book.open_qty(1) is None


@pytest.mark.parametrize("qty", [0, -1, 1.5, "2", True])
def test_cancel_with_a_bad_qty_is_rejected(qty) -> None:
    book = three_asks()
    assert book.cancel(1, qty) == [Rejected(1, "invalid_qty")]
    assert book.open_qty(1) == 5


def test_cancelling_what_is_not_resting_is_rejected() -> None:
    book = three_asks()
    book.submit(limit(9, BUY, 5, 100, account=9))  # fills order 1 completely
    assert book.open_qty(1) is None
    assert book.cancel(1) == [Rejected(1, "unknown_order")]  # filled
    assert book.cancel(2) == [Canceled(2, 5, 0, "user"), BookDelta(SELL, 100, 5)]
    assert book.cancel(2) == [Rejected(2, "unknown_order")]  # already cancelled
    assert book.cancel(12345) == [Rejected(12345, "unknown_order")]  # never seen
    assert book.cancel(12345, 3) == [Rejected(12345, "unknown_order")]


def test_replace_down_at_the_same_price_keeps_priority() -> None:
    book = three_asks()
    assert book.replace(1, 2, 100, 1) == [Replaced(1, 2, 100, 5, 100), BookDelta(SELL, 100, 12)]
    assert trades(book.submit(limit(9, BUY, 3, 100))) == [(1, 9, 100, 2), (2, 9, 100, 1)]


def test_replace_with_price_none_keeps_the_price() -> None:
    book = three_asks()
    assert book.replace(1, 4) == [Replaced(1, 4, 100, 5, 100), BookDelta(SELL, 100, 14)]


def test_replace_to_the_same_state_changes_nothing() -> None:
    book = three_asks()
    assert book.replace(1, 5, 100) == [Replaced(1, 5, 100, 5, 100)]
    assert trades(book.submit(limit(9, BUY, 1, 100))) == [(1, 9, 100, 1)]


def test_replace_up_loses_priority() -> None:
    book = three_asks()
    assert book.replace(1, 6, 100) == [
        Replaced(1, 6, 100, 5, 100),
        BookDelta(SELL, 100, 10),
        BookDelta(SELL, 100, 16),
    ]
    assert trades(book.submit(limit(9, BUY, 11, 100))) == [
        (2, 9, 100, 5),
        (3, 9, 100, 5),
        (1, 9, 100, 1),
    ]


def test_replace_to_a_new_price_goes_to_the_back_of_that_level() -> None:
    book = book_with(limit(1, SELL, 5, 101, account=2), limit(2, SELL, 5, 100, account=3))
    assert book.replace(1, 5, 100) == [
        Replaced(1, 5, 100, 5, 101),
        BookDelta(SELL, 101, 0),
        BookDelta(SELL, 100, 10),
    ]
    assert trades(book.submit(limit(9, BUY, 6, 100))) == [(2, 9, 100, 5), (1, 9, 100, 1)]


def test_a_replace_that_crosses_trades_as_an_incoming_order() -> None:
    book = book_with(limit(1, SELL, 3, 101, account=2), limit(2, BUY, 5, 99, account=3))
    events = book.replace(2, 5, 102, ts=8)
    assert without_deltas(events) == [
        Replaced(2, 5, 102, 5, 99),
        Trade(1, 2, 101, 3, BUY, 2, 3, 0, 2, 1, 8),
    ]
    assert book.depth(5) == ([(102, 2)], [])
    assert book.open_qty(2) == 2


def test_a_post_only_replace_that_would_cross_is_rejected_and_keeps_its_state() -> None:
    book = book_with(limit(1, SELL, 3, 101, account=2), limit(2, BUY, 5, 99, post_only=True))
    before = book.snapshot()
    assert book.replace(2, 5, 101) == [Rejected(2, "post_only_would_cross")]
    assert book.snapshot() == before
    assert book.replace(2, 4, 100) == [
        Replaced(2, 4, 100, 5, 99),
        BookDelta(BUY, 99, 0),
        BookDelta(BUY, 100, 4),
    ]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((1, 0, 100), "invalid_qty"),
        ((1, -2, 100), "invalid_qty"),
        ((1, 2, 0), "invalid_price"),
        ((1, 2, 10.5), "invalid_price"),
        ((77, 2, 100), "unknown_order"),
    ],
)
def test_bad_replaces_are_rejected(args, reason) -> None:
    book = three_asks()
    before = book.snapshot()
    assert book.replace(*args) == [Rejected(args[0], reason)]
    assert book.snapshot() == before


def test_replacing_a_resting_order_with_a_stop_price_is_rejected() -> None:
    assert three_asks().replace(1, 2, 100, stop_price=90) == [Rejected(1, "invalid_stop_price")]


def test_replaced_order_keeps_its_identity_for_later_commands() -> None:
    book = three_asks()
    book.replace(1, 7, 102)
    assert book.open_qty(1) == 7
    assert book.submit(limit(1, BUY, 1, 90)) == [Rejected(1, "duplicate_id")]
    assert book.cancel(1) == [Canceled(1, 7, 0, "user"), BookDelta(SELL, 102, 0)]
    assert book.submit(limit(1, BUY, 1, 90)) == [Accepted(1), BookDelta(BUY, 90, 1)]
