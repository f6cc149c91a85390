"""Self-trade prevention: cancel newest (default), oldest, or both."""

from __future__ import annotations

import pytest

from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    OrderBook,
    Rejected,
    SelfTradePrevention,
    TimeInForce,
)

from .helpers import BUY, SELL, limit, market, trades, without_deltas

NEWEST = SelfTradePrevention.CANCEL_NEWEST
OLDEST = SelfTradePrevention.CANCEL_OLDEST
BOTH = SelfTradePrevention.CANCEL_BOTH


def book_for(stp: SelfTradePrevention | None) -> OrderBook:
    """Asks: 2 lots of account 2 at 100, then 3 of account 1 at 100, then 4 of account 3."""
    book = OrderBook("STP") if stp is None else OrderBook("STP", stp=stp)
    book.submit(limit(1, SELL, 2, 100, account=2))
    book.submit(limit(2, SELL, 3, 100, account=1))
    book.submit(limit(3, SELL, 4, 101, account=3))
    return book


def test_default_is_cancel_newest() -> None:
    assert OrderBook("X").stp is NEWEST


@pytest.mark.parametrize("stp", [None, NEWEST])
def test_cancel_newest_cancels_the_incoming_remainder(stp) -> None:
    book = book_for(stp)
    events = book.submit(limit(9, BUY, 6, 101, account=1), 0)
    assert trades(events) == [(1, 9, 100, 2)]
    assert without_deltas(events)[-1] == Canceled(9, 4, 0, "self_trade")
    assert book.open_qty(2) == 3  # the resting order stays
    assert book.open_qty(9) is None
    assert book.depth(5) == ([], [(100, 3), (101, 4)])


def test_cancel_oldest_cancels_the_resting_order_and_keeps_matching() -> None:
    book = book_for(OLDEST)
    events = book.submit(limit(9, BUY, 6, 101, account=1), 0)
    assert trades(events) == [(1, 9, 100, 2), (3, 9, 101, 4)]
    assert Canceled(2, 3, 0, "self_trade") in events
    assert BookDelta(SELL, 100, 0) in events
    assert book.open_qty(2) is None
    assert book.depth(5) == ([], [])


def test_cancel_both_cancels_both_orders() -> None:
    book = book_for(BOTH)
    events = book.submit(limit(9, BUY, 6, 101, account=1), 0)
    assert trades(events) == [(1, 9, 100, 2)]
    assert without_deltas(events)[-2:] == [
        Canceled(2, 3, 0, "self_trade"),
        Canceled(9, 4, 0, "self_trade"),
    ]
    assert book.depth(5) == ([], [(101, 4)])


def test_orders_of_one_account_that_do_not_cross_both_rest() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 2, 101))
    assert book.submit(limit(2, BUY, 2, 100)) == [Accepted(2), BookDelta(BUY, 100, 2)]


def test_market_order_stopped_by_its_own_resting_order() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 2, 101, account=1))
    assert book.submit(market(9, BUY, 2, account=1)) == [
        Accepted(9),
        Canceled(9, 2, 0, "self_trade"),
    ]
    assert book.open_qty(1) == 2


@pytest.mark.parametrize(("stp", "fills"), [(NEWEST, False), (BOTH, False), (OLDEST, True)])
def test_fok_counts_only_liquidity_that_self_trade_prevention_lets_it_reach(stp, fills) -> None:
    book = book_for(stp)
    events = book.submit(limit(9, BUY, 6, 101, account=1, tif=TimeInForce.FOK), 0)
    if fills:
        assert trades(events) == [(1, 9, 100, 2), (3, 9, 101, 4)]
    else:
        assert events == [Rejected(9, "fok_unfillable")]
        assert book.depth(5) == ([], [(100, 5), (101, 4)])
