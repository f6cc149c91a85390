"""Market orders: sweep the opposite side, never rest, and cancel what cannot fill."""

from __future__ import annotations

import pytest

from trading.engine import Accepted, BookDelta, Canceled, Rejected, TimeInForce, Trade

from .helpers import BUY, SELL, book_with, limit, market, trades, without_deltas


@pytest.mark.parametrize(
    ("side", "maker_side", "prices"),
    [(BUY, SELL, (101, 102, 105)), (SELL, BUY, (99, 98, 90))],
)
def test_market_sweeps_levels_at_maker_prices(side, maker_side, prices) -> None:
    book = book_with(*(limit(i, maker_side, 2, p, account=2) for i, p in enumerate(prices, 1)))
    events = book.submit(market(9, side, 5), 3)
    assert trades(events) == [(1, 9, prices[0], 2), (2, 9, prices[1], 2), (3, 9, prices[2], 1)]
    assert events[0] == Accepted(9)
    assert book.open_qty(3) == 1
    assert book.open_qty(9) is None


@pytest.mark.parametrize("tif", [TimeInForce.GTC, TimeInForce.IOC, TimeInForce.DAY])
def test_market_remainder_is_cancelled_for_lack_of_liquidity(tif) -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2))
    events = book.submit(market(9, BUY, 5, tif=tif), 0)
    assert without_deltas(events) == [
        Accepted(9),
        Trade(1, 9, 101, 2, BUY, 2, 1, 0, 3, 1, 0),
        Canceled(9, 3, 0, "no_liquidity"),
    ]
    assert book.depth(5) == ([], [])
    assert book.open_qty(9) is None


def test_market_on_an_empty_side_is_accepted_then_cancelled() -> None:
    book = book_with(limit(1, BUY, 2, 99, account=2))
    assert book.submit(market(9, BUY, 5), 0) == [Accepted(9), Canceled(9, 5, 0, "no_liquidity")]
    assert book.depth(5) == ([(99, 2)], [])


def test_market_fok_fills_all_or_is_rejected() -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2), limit(2, SELL, 2, 110, account=2))
    assert book.submit(market(8, BUY, 5, tif=TimeInForce.FOK), 0) == [Rejected(8, "fok_unfillable")]
    events = book.submit(market(9, BUY, 4, tif=TimeInForce.FOK), 0)
    assert trades(events) == [(1, 9, 101, 2), (2, 9, 110, 2)]
    assert events[-1] == BookDelta(SELL, 110, 0)


def test_market_updates_last_price_to_the_last_fill() -> None:
    book = book_with(limit(1, SELL, 2, 101, account=2), limit(2, SELL, 2, 103, account=2))
    assert book.last_price is None
    book.submit(market(9, BUY, 3), 0)
    assert book.last_price == 103
