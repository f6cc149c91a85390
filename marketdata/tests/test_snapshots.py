"""The JSON snapshots a client resyncs from without the socket: the book as the matcher
committed it (`/marketdata/api/book/`) and the public tape (`/marketdata/api/trades/`), on the
real database; the book also through the real order path and matcher."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketdata import sql
from testing.helpers import place, settled, wait_for
from trading.messages import epoch_ms
from trading.models import BookState, Instrument, Order, StreamSequence
from tredye import kafka

D = Decimal
BOOK_URL = "/marketdata/api/book/"
TRADES_URL = "/marketdata/api/trades/"
T0 = datetime.datetime(2026, 11, 27, 10, 0, 0, tzinfo=datetime.UTC)
pytestmark = pytest.mark.django_db(transaction=True)


def order_row(
    market: Instrument,
    account,
    side: str,
    price: str,
    quantity: str,
    *,
    status: str = Order.Status.NEW,
    filled: str = "0",
    type: str = Order.Type.LIMIT,
    stop_price: str | None = None,
    triggered: bool = False,
) -> Order:
    """An order row as the matcher would have left it (no holds: only the book reads it)."""
    return Order.objects.create(
        account=account,
        instrument=market,
        client_order_id=uuid.uuid4().hex,
        side=side,
        type=type,
        time_in_force=Order.TimeInForce.GTC,
        quantity=D(quantity),
        price=D(price),
        stop_price=D(stop_price) if stop_price is not None else None,
        triggered_at=T0 if triggered else None,
        status=status,
        filled_quantity=D(filled),
        maker_fee_rate=market.maker_fee_rate,
        taker_fee_rate=market.taker_fee_rate,
    )


@pytest.fixture
def market(make_instrument):
    return make_instrument()


@pytest.fixture
def trader(make_account):
    return make_account()


def test_the_book_sums_resting_orders_per_level_best_first(market, trader, client):
    BookState.objects.create(instrument=market, book_seq=99, updated_at=T0)
    # the number of the book's last delta, which the stream's updates continue from
    StreamSequence.objects.create(topic=kafka.BOOK, key=market.symbol, seq=7)
    order_row(market, trader, "buy", "10.00", "3")
    order_row(market, trader, "buy", "10.00", "5", status="partially_filled", filled="2")
    order_row(market, trader, "buy", "9.50", "1")
    order_row(market, trader, "sell", "10.50", "4")
    order_row(market, trader, "sell", "10.25", "2")
    # a triggered stop limit rests like a limit order
    order_row(
        market, trader, "sell", "10.25", "1", type="stop_limit", stop_price="9.8", triggered=True
    )
    # not in the book: a pending stop, an order the matcher has not applied, closed ones
    order_row(market, trader, "buy", "10.00", "7", type="stop_limit", stop_price="10.8")
    order_row(market, trader, "sell", "10.25", "9", type="stop_limit", stop_price="9.1")
    order_row(market, trader, "buy", "10.00", "11", status="pending_new")
    order_row(market, trader, "sell", "10.50", "13", status="filled", filled="13")
    order_row(market, trader, "sell", "10.50", "17", status="canceled")
    order_row(market, trader, "buy", "9.50", "19", status="expired")

    response = client.get(BOOK_URL, {"symbol": market.symbol})

    assert response.status_code == 200
    assert response.json() == {
        "symbol": market.symbol,
        "seq": 7,
        "ts": epoch_ms(T0),
        "bids": [["10", "6"], ["9.5", "1"]],
        "asks": [["10.25", "3"], ["10.5", "4"]],
    }


def test_the_levels_and_the_seq_are_read_in_one_repeatable_read_transaction(market, client):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(BOOK_URL, {"symbol": market.symbol}).status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    first = statements.index(sql.REPEATABLE_READ)
    # every read of orders and of the book state runs after it, in its transaction
    reads = [
        i
        for i, s in enumerate(statements)
        if any(table in s for table in ('"trading_order"', "bookstate", "streamsequence"))
    ]
    assert len(reads) == 4
    assert min(reads) > first


def test_a_book_the_matcher_never_touched_has_seq_0_and_no_time(market, client):
    assert client.get(BOOK_URL, {"symbol": market.symbol}).json() == {
        "symbol": market.symbol,
        "seq": 0,
        "ts": None,
        "bids": [],
        "asks": [],
    }


def test_depth_limits_the_levels_per_side(market, trader, client):
    for level in range(25):
        order_row(market, trader, "buy", str(D("100") - level), "1")
        order_row(market, trader, "sell", str(D("200") + level), "1")
    default = client.get(BOOK_URL, {"symbol": market.symbol}).json()
    assert len(default["bids"]) == len(default["asks"]) == 20
    three = client.get(BOOK_URL, {"symbol": market.symbol, "depth": "3"}).json()
    assert three["bids"] == [["100", "1"], ["99", "1"], ["98", "1"]]
    assert three["asks"] == [["200", "1"], ["201", "1"], ["202", "1"]]
    most = client.get(BOOK_URL, {"symbol": market.symbol, "depth": "200"}).json()
    assert len(most["bids"]) == len(most["asks"]) == 25


@pytest.mark.parametrize("depth", ["0", "201", "-1", "abc", "1.5", "", "²", "99999"])
def test_a_bad_depth_is_a_400(market, client, depth):
    response = client.get(BOOK_URL, {"symbol": market.symbol, "depth": depth})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_depth"


@pytest.mark.parametrize("url", [BOOK_URL, TRADES_URL])
def test_symbols_and_parameters_are_checked_as_the_candles_endpoint_does(market, client, url):
    def code(query: dict) -> tuple[int, str]:
        response = client.get(url, query)
        return response.status_code, response.json()["error"]["code"]

    assert code({}) == (400, "invalid_symbol")
    assert code({"symbol": "NOPE"}) == (400, "invalid_symbol")
    assert code({"symbol": "A\x00B"}) == (400, "invalid_symbol")
    assert code({"symbol": "X" * 100}) == (400, "invalid_symbol")
    assert code({"symbol": market.symbol, "cursor": "1"}) == (400, "unknown_parameter")
    assert client.post(url, {"symbol": market.symbol}).status_code == 405


def test_the_tape_is_newest_first_without_accounts_or_orders(market, make_trades, client):
    make_trades(
        market,
        [
            (seq, f"10.{seq:02d}", str(seq), T0 + datetime.timedelta(seconds=seq))
            for seq in range(1, 61)
        ],
    )
    response = client.get(TRADES_URL, {"symbol": market.symbol})
    assert response.status_code == 200
    body = response.json()
    assert body["symbol"] == market.symbol
    tape = body["trades"]
    assert len(tape) == 50
    assert [t["seq"] for t in tape] == list(range(60, 10, -1))
    assert tape[0] == {
        "seq": 60,
        "price": "10.6",
        "quantity": "60",
        "aggressor": "buy",
        "ts": epoch_ms(T0 + datetime.timedelta(seconds=60)),
    }
    # public: no account, order, fee or id of anyone
    assert {key for t in tape for key in t} == {"seq", "price", "quantity", "aggressor", "ts"}
    short = client.get(TRADES_URL, {"symbol": market.symbol, "limit": "2"}).json()["trades"]
    assert [t["seq"] for t in short] == [60, 59]
    everything = client.get(TRADES_URL, {"symbol": market.symbol, "limit": "500"}).json()
    assert len(everything["trades"]) == 60


@pytest.mark.parametrize("limit", ["0", "501", "-1", "x", "", "1e2"])
def test_a_bad_limit_is_a_400(market, client, limit):
    response = client.get(TRADES_URL, {"symbol": market.symbol, "limit": limit})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_limit"


def test_the_snapshot_is_the_book_the_matcher_built(
    order_path, make_instrument, make_account, client
):
    market = make_instrument()
    sellers = [make_account(funds={market.base: "20"}) for _ in range(2)]
    buyer = make_account(funds={market.quote: "10000"})
    settled(place(sellers[0], market, "sell", "5", price="10.10"))
    settled(place(sellers[1], market, "sell", "3", price="10.10"))
    settled(place(sellers[0], market, "sell", "4", price="10.20"))
    settled(place(buyer, market, "buy", "2", price="10.00"))
    settled(place(buyer, market, "buy", "3", price="9.90"))
    settled(place(buyer, market, "buy", "1", price="10.00"))
    # crosses: takes 5 and then 1 of the 10.10 level, the rest of it stays
    cross = settled(place(buyer, market, "buy", "6", price="10.15"))
    assert cross.status == Order.Status.FILLED
    # a stop that has not triggered waits outside the book
    stop = settled(
        place(sellers[1], market, "sell", "7", type="stop_limit", price="9.95", stop_price="9.95")
    )
    assert stop.status == Order.Status.NEW
    assert stop.triggered_at is None
    # a sell that takes the 10.00 level and part of 9.90, and with it triggers the stop
    taker = settled(place(sellers[1], market, "sell", "5", price="9.90"))
    wait_for(
        lambda: Order.objects.get(pk=stop.pk).triggered_at is not None,
        what="the stop to trigger on the trades at 10.00 and 9.90",
    )
    # sold 2 + 1 at 10.00 and 2 at 9.90: 1 left at 9.90 bid; the stop (a sell at 9.95 once
    # triggered by the last trade 9.90) rests on the ask side
    taker.refresh_from_db()
    assert taker.status == Order.Status.FILLED
    body = client.get(BOOK_URL, {"symbol": market.symbol}).json()
    state = BookState.objects.get(instrument=market)
    deltas = StreamSequence.objects.get(topic=kafka.BOOK, key=market.symbol)
    assert body == {
        "symbol": market.symbol,
        "seq": deltas.seq,
        "ts": epoch_ms(state.updated_at),
        "bids": [["9.9", "1"]],
        "asks": [["9.95", "7"], ["10.1", "2"], ["10.2", "4"]],
    }
