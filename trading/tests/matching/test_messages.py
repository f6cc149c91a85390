"""The JSON shapes of trades, book deltas and account updates (trading/messages.py) on their
own: no database. The streams and other services read these shapes, so each test pins one."""

from __future__ import annotations

import json
from decimal import Decimal

from trading.messages import (
    ACCOUNT_ORDERS,
    BOOK_DELTA,
    TRADE,
    account_orders_message,
    account_trade_message,
    book_delta_message,
    trade_message,
)
from trading.models import Order

D = Decimal


def a_trade() -> dict:
    return trade_message(
        symbol="BTC-USD",
        seq=7,
        price=D("100.50"),
        quantity=D("2.000"),
        aggressor=Order.Side.BUY,
        maker_order_id=11,
        taker_order_id=12,
        ts=1_700_000_000_000,
    )


def test_the_event_types_on_the_wire() -> None:
    assert (TRADE, BOOK_DELTA, ACCOUNT_ORDERS) == ("trade", "book.delta", "account.orders")


def test_a_trade_in_plain_decimals_with_its_fields_in_order() -> None:
    trade = a_trade()
    assert list(trade) == [
        "symbol",
        "seq",
        "price",
        "quantity",
        "aggressor",
        "maker_order_id",
        "taker_order_id",
        "ts",
    ]
    assert json.loads(json.dumps(trade)) == {
        "symbol": "BTC-USD",
        "seq": 7,
        "price": "100.5",
        "quantity": "2",
        "aggressor": "buy",
        "maker_order_id": 11,
        "taker_order_id": 12,
        "ts": 1_700_000_000_000,
    }


def test_an_accounts_trade_adds_its_side_and_fee_and_leaves_the_trade_alone() -> None:
    trade = a_trade()
    mine = account_trade_message(trade, side="sell", fee=D("0.0100"))
    assert mine == trade | {"side": "sell", "fee": "0.01"}
    assert "side" not in trade
    assert account_trade_message(trade, side="buy", fee=D(0))["fee"] == "0"


def test_a_book_delta_lists_bids_best_first_then_asks_best_first() -> None:
    levels = {
        (1, D("99.5")): D("3"),
        (-1, D("101.00")): D("1.50"),
        (1, D("100")): D("0"),  # a level that is gone
        (-1, D("100.5")): D("2"),
        (1, D("9.75")): D("10"),  # a lower price with more digits before the point
    }
    assert book_delta_message("BTC-USD", levels) == {
        "symbol": "BTC-USD",
        "bids": [["100", "0"], ["99.5", "3"], ["9.75", "10"]],
        "asks": [["100.5", "2"], ["101", "1.5"]],
    }


def test_a_book_delta_of_one_side_has_the_other_empty() -> None:
    assert book_delta_message("X", {(-1, D("5")): D("1")}) == {
        "symbol": "X",
        "bids": [],
        "asks": [["5", "1"]],
    }


def test_an_account_update_carries_its_orders_and_trades() -> None:
    order = Order(
        pk=3,
        client_order_id="c-3",
        instrument_id=4,
        side=Order.Side.SELL,
        type=Order.Type.LIMIT,
        time_in_force=Order.TimeInForce.GTC,
        post_only=False,
        quantity=D("2"),
        price=D("100.50"),
        stop_price=None,
        status=Order.Status.FILLED,
        reason="",
        filled_quantity=D("2"),
        average_price=D("100.5"),
        fees=D("0.10"),
        held=D(0),
    )
    trades = [account_trade_message(a_trade(), side="sell", fee=D("0.1"))]
    message = account_orders_message(9, [order], trades)
    assert list(message) == ["account_id", "orders", "trades"]
    assert message["account_id"] == 9
    assert message["trades"] == trades
    (shown,) = message["orders"]
    assert shown["id"] == 3
    assert shown["symbol"] is None  # the instrument is not loaded: only its id
    assert (shown["instrument_id"], shown["price"], shown["fees"]) == (4, "100.5", "0.1")
