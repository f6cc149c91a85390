"""Limit orders: price-time priority, maker-price fills, time in force and post-only."""

from __future__ import annotations

import pytest

from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    Expired,
    OrderBook,
    Rejected,
    TimeInForce,
    Trade,
)

from .helpers import BUY, SELL, book_with, limit, trades, without_deltas

GTC, IOC, FOK, DAY = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY


@pytest.mark.parametrize("tif", [GTC, DAY])
@pytest.mark.parametrize(("side", "price"), [(BUY, 99), (SELL, 101)])
def test_a_limit_that_does_not_cross_rests(side, price, tif) -> None:
    book = book_with(limit(1, BUY, 5, 99), limit(2, SELL, 5, 101))
    events = book.submit(limit(3, side, 4, price, tif=tif), 7)
    assert events == [Accepted(3), BookDelta(side, price, 9)]
    assert book.open_qty(3) == 4
    best = book.best_bid() if side is BUY else book.best_ask()
    assert best == (price, 9)


def test_levels_and_depth_are_best_first() -> None:
    book = book_with(
        limit(1, BUY, 1, 97),
        limit(2, BUY, 2, 99),
        limit(3, BUY, 3, 98),
        limit(4, SELL, 4, 103),
        limit(5, SELL, 5, 101),
        limit(6, SELL, 6, 101),
    )
    assert book.depth(10) == ([(99, 2), (98, 3), (97, 1)], [(101, 11), (103, 4)])
    assert book.depth(1) == ([(99, 2)], [(101, 11)])
    assert book.depth(0) == ([], [])
    assert book.best_bid() == (99, 2)
    assert book.best_ask() == (101, 11)
    assert OrderBook("EMPTY").best_bid() is None
    assert OrderBook("EMPTY").best_ask() is None


@pytest.mark.parametrize(
    ("taker_side", "maker_side", "maker_prices", "limit_price"),
    [(BUY, SELL, (101, 102, 103), 103), (SELL, BUY, (99, 98, 97), 97)],
)
def test_partial_fills_across_several_levels_print_at_maker_prices(
    taker_side, maker_side, maker_prices, limit_price
) -> None:
    first, second, third = maker_prices
    book = book_with(
        limit(1, maker_side, 2, first, account=2),
        limit(2, maker_side, 3, second, account=2),
        limit(3, maker_side, 4, third, account=2),
    )
    events = book.submit(limit(9, taker_side, 7, limit_price, account=1), 5)
    assert trades(events) == [(1, 9, first, 2), (2, 9, second, 3), (3, 9, third, 2)]
    assert [e for e in events if type(e) is BookDelta] == [
        BookDelta(maker_side, first, 0),
        BookDelta(maker_side, second, 0),
        BookDelta(maker_side, third, 2),
    ]
    last = [e for e in events if type(e) is Trade][-1]
    assert last == Trade(3, 9, third, 2, taker_side, 2, 1, 2, 0, 3, 5)
    assert book.open_qty(3) == 2
    assert book.open_qty(1) is None
    assert book.last_price == third


def test_time_priority_within_a_level() -> None:
    book = book_with(
        limit(1, SELL, 2, 100, account=2),
        limit(2, SELL, 2, 100, account=3),
        limit(3, SELL, 2, 100, account=4),
    )
    events = book.submit(limit(9, BUY, 3, 100), 0)
    assert trades(events) == [(1, 9, 100, 2), (2, 9, 100, 1)]
    assert book.open_qty(2) == 1
    assert book.open_qty(3) == 2


def test_better_price_beats_earlier_time() -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2), limit(2, SELL, 2, 100, account=2))
    assert trades(book.submit(limit(9, BUY, 2, 101), 0)) == [(2, 9, 100, 2)]


def test_the_remainder_of_a_crossing_gtc_limit_rests_at_its_price() -> None:
    book = book_with(limit(1, SELL, 2, 100, account=2))
    events = book.submit(limit(9, BUY, 5, 102), 0)
    assert events[-1] == BookDelta(BUY, 102, 3)
    assert book.depth(5) == ([(102, 3)], [])


def test_trade_events_carry_remaining_quantities_and_a_book_sequence() -> None:
    book = book_with(limit(1, SELL, 5, 100, account=2), limit(2, SELL, 5, 100, account=2))
    first = [e for e in book.submit(limit(8, BUY, 3, 100), 10) if type(e) is Trade]
    second = [e for e in book.submit(limit(9, BUY, 4, 100), 11) if type(e) is Trade]
    assert first == [Trade(1, 8, 100, 3, BUY, 2, 1, 2, 0, 1, 10)]
    assert second == [
        Trade(1, 9, 100, 2, BUY, 2, 1, 0, 2, 2, 11),
        Trade(2, 9, 100, 2, BUY, 2, 1, 3, 0, 3, 11),
    ]
    assert book.trade_seq == 3


@pytest.mark.parametrize(("side", "price", "crossing"), [(BUY, 105, 101), (SELL, 95, 99)])
def test_ioc_fills_what_it_can_and_cancels_the_rest(side, price, crossing) -> None:
    maker_side = SELL if side is BUY else BUY
    book = book_with(limit(1, maker_side, 2, crossing, account=2))
    events = book.submit(limit(9, side, 5, price, tif=IOC), 0)
    assert without_deltas(events) == [
        Accepted(9),
        Trade(1, 9, crossing, 2, side, 2, 1, 0, 3, 1, 0),
        Canceled(9, 3, 0, "ioc_remainder"),
    ]
    assert book.open_qty(9) is None
    assert book.depth(5) == ([], [])


def test_ioc_with_nothing_to_match_is_cancelled() -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2))
    assert book.submit(limit(9, BUY, 5, 100, tif=IOC), 0) == [
        Accepted(9),
        Canceled(9, 5, 0, "ioc_remainder"),
    ]
    assert book.depth(5) == ([], [(101, 2)])


def test_fok_that_can_fill_completely_fills_across_levels() -> None:
    book = book_with(limit(1, SELL, 2, 100, account=2), limit(2, SELL, 3, 101, account=2))
    events = book.submit(limit(9, BUY, 5, 101, tif=FOK), 0)
    assert trades(events) == [(1, 9, 100, 2), (2, 9, 101, 3)]
    assert book.depth(5) == ([], [])


@pytest.mark.parametrize("limit_price", [100, 101, 99])
def test_fok_that_cannot_fill_completely_is_rejected_and_nothing_trades(limit_price) -> None:
    book = book_with(limit(1, SELL, 2, 100, account=2), limit(2, SELL, 3, 101, account=2))
    before = book.snapshot()
    events = book.submit(limit(9, BUY, 6, limit_price, tif=FOK), 0)
    assert events == [Rejected(9, "fok_unfillable")]
    assert book.snapshot() == before


def test_post_only_rests_when_it_does_not_cross() -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2))
    events = book.submit(limit(9, BUY, 5, 100, post_only=True), 0)
    assert events == [Accepted(9), BookDelta(BUY, 100, 5)]


@pytest.mark.parametrize(("side", "price"), [(BUY, 101), (BUY, 102), (SELL, 99), (SELL, 98)])
def test_post_only_that_would_take_liquidity_is_rejected(side, price) -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2), limit(2, BUY, 2, 99, account=2))
    before = book.snapshot()
    assert book.submit(limit(9, side, 5, price, post_only=True), 0) == [
        Rejected(9, "post_only_would_cross")
    ]
    assert book.snapshot() == before


def test_day_orders_expire_resting_and_pending_but_gtc_stay() -> None:
    book = book_with(
        limit(1, BUY, 2, 99, tif=DAY),
        limit(2, BUY, 3, 99),
        limit(3, SELL, 4, 101, tif=DAY),
    )
    events = book.expire_day(100)
    assert events == [
        Expired(1, 2),
        BookDelta(BUY, 99, 3),
        Expired(3, 4),
        BookDelta(SELL, 101, 0),
    ]
    assert book.depth(5) == ([(99, 3)], [])
    assert book.expire_day(200) == []
