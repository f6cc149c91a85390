"""The trader's own trades endpoint: each fill with the account's order, paged by a cursor."""

from __future__ import annotations

import datetime
from decimal import Decimal
from itertools import count

import pytest

from accounts.models import Account
from testing.helpers import client_for, place, settled, wait_for
from trading.models import Instrument, Order, Trade

D = Decimal
URL = "/trading/api/trades/"
_seqs = count(1)


def fill(market: Instrument, maker: Order, taker: Order, *, price: str = "20.00") -> Trade:
    """A trade row between two resting orders, as the matcher writes one (the endpoint only
    reads rows; the real order path is in `test_a_fill_through_the_order_path_...`)."""
    buyer, seller = (maker, taker) if maker.side == "buy" else (taker, maker)
    return Trade.objects.create(
        instrument=market,
        seq=next(_seqs),
        maker_order=maker,
        taker_order=taker,
        buyer_id=buyer.account_id,
        seller_id=seller.account_id,
        price=D(price),
        quantity=D("1"),
        quote_amount=D(price),
        aggressor_side=taker.side,
        buyer_fee=D("0.04"),
        seller_fee=D("0.02"),
        settlement_date=datetime.datetime.now(tz=datetime.UTC).date(),
    )


def get(account: Account, **query: str) -> tuple[int, dict]:
    response = client_for(account).get(URL, query)
    return response.status_code, response.json()


@pytest.fixture
def bob(make_account, market):
    return make_account(funds={market.quote: "1000", market.base: "10"})


@pytest.fixture
def orders(alice, bob, market):
    """Alice's resting sell and Bob's buy on the same market (not matched: no matcher runs)."""
    sell = place(alice, market, "sell", "5", client_order_id="a-sell", price="20.00")
    buy = place(bob, market, "buy", "5", client_order_id="b-buy", price="20.00")
    return sell, buy


@pytest.mark.django_db
def test_each_fill_carries_the_accounts_own_order_side_liquidity_and_fee(
    alice, bob, market, orders
):
    sell, buy = orders
    trade = fill(market, maker=sell, taker=buy)
    _, mine = get(alice)
    _, theirs = get(bob)
    assert mine["next_cursor"] is None
    [as_maker] = mine["trades"]
    [as_taker] = theirs["trades"]
    assert as_maker == {
        "id": trade.pk,
        "symbol": market.symbol,
        "seq": trade.seq,
        "order_id": sell.pk,
        "client_order_id": "a-sell",
        "side": "sell",
        "liquidity": "maker",
        "price": "20",
        "quantity": "1",
        "quote_amount": "20",
        "fee": "0.02",
        "fee_asset": market.quote.code,
        "executed_at": trade.executed_at.isoformat(),
        "executed_at_ms": as_maker["executed_at_ms"],
    }
    assert abs(as_maker["executed_at_ms"] / 1000 - trade.executed_at.timestamp()) < 0.001
    assert (as_taker["order_id"], as_taker["client_order_id"]) == (buy.pk, "b-buy")
    assert (as_taker["side"], as_taker["liquidity"], as_taker["fee"]) == ("buy", "taker", "0.04")


@pytest.mark.django_db
def test_pages_with_a_cursor_stay_the_same_while_new_trades_arrive(alice, bob, market, orders):
    sell, buy = orders
    first = [fill(market, maker=sell, taker=buy) for _ in range(5)]
    status, page1 = get(alice, limit="2")
    assert status == 200
    assert [t["id"] for t in page1["trades"]] == [first[4].pk, first[3].pk]
    # New trades between calls land above the cursor, never on the following pages.
    fill(market, maker=sell, taker=buy)
    _, page2 = get(alice, limit="2", cursor=page1["next_cursor"])
    assert [t["id"] for t in page2["trades"]] == [first[2].pk, first[1].pk]
    fill(market, maker=buy, taker=sell)
    _, page3 = get(alice, limit="2", cursor=page2["next_cursor"])
    assert [t["id"] for t in page3["trades"]] == [first[0].pk]
    assert page3["next_cursor"] is None
    # From the top again: the newest first, the two that arrived included.
    _, top = get(alice, limit="2")
    assert [t["liquidity"] for t in top["trades"]] == ["taker", "maker"]


@pytest.mark.django_db
def test_a_full_last_page_has_no_next_cursor(alice, market, orders):
    sell, buy = orders
    fill(market, maker=sell, taker=buy)
    fill(market, maker=sell, taker=buy)
    _, page = get(alice, limit="2")
    assert len(page["trades"]) == 2
    assert page["next_cursor"] is None


@pytest.mark.django_db
def test_the_symbol_filter_and_other_accounts(alice, bob, market, orders, make_instrument):
    sell, buy = orders
    fill(market, maker=sell, taker=buy)
    other = make_instrument()
    _, page = get(alice, symbol=other.symbol)
    assert page == {"trades": [], "next_cursor": None}
    _, page = get(alice, symbol=market.symbol.lower())
    assert len(page["trades"]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"limit": "501"}, 400, "invalid_limit"),
        ({"limit": "0"}, 400, "invalid_limit"),
        ({"limit": "-1"}, 400, "invalid_limit"),
        ({"limit": "1.5"}, 400, "invalid_limit"),
        ({"limit": "٣"}, 400, "invalid_limit"),
        ({"symbol": "NOPE"}, 404, "unknown_instrument"),
        ({"symbol": "A\x00"}, 404, "unknown_instrument"),
        ({"cursor": "1"}, 400, "invalid_cursor"),
        ({"cursor": ""}, 400, "invalid_cursor"),
        ({"cursor": "MTI:forged"}, 400, "invalid_cursor"),
    ],
)
def test_bad_input_is_a_clear_error(alice, query, status, code):
    got, body = get(alice, **query)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["detail"]


@pytest.mark.django_db
def test_a_tampered_cursor_is_refused(alice, market, orders):
    sell, buy = orders
    for _ in range(3):
        fill(market, maker=sell, taker=buy)
    _, page = get(alice, limit="1")
    cursor = page["next_cursor"]
    payload, signature = cursor.rsplit(":", 1)
    tampered = ("x" if payload[0] != "x" else "y") + payload[1:] + ":" + signature
    status, body = get(alice, limit="1", cursor=tampered)
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")


@pytest.mark.django_db(transaction=True)
def test_a_fill_through_the_order_path_names_each_sides_order(
    order_path, make_instrument, make_account
):
    market = make_instrument()
    seller = make_account(funds={market.base: "10"})
    buyer = make_account(funds={market.quote: "1000"})
    sell = settled(place(seller, market, "sell", "4", client_order_id="s1", price="20.00"))
    buy = settled(place(buyer, market, "buy", "4", client_order_id="b1", price="21.00"))
    wait_for(lambda: Trade.objects.filter(instrument=market).exists(), 10, "the trade")
    [as_maker] = get(seller)[1]["trades"]
    [as_taker] = get(buyer)[1]["trades"]
    assert (as_maker["order_id"], as_maker["liquidity"], as_maker["side"]) == (
        sell.pk,
        "maker",
        "sell",
    )
    assert (as_taker["order_id"], as_taker["liquidity"], as_taker["side"]) == (
        buy.pk,
        "taker",
        "buy",
    )
    # 80.00 at 0.1 % for the maker and 0.2 % for the taker, in the quote asset
    assert (as_maker["quote_amount"], as_maker["fee"], as_taker["fee"]) == ("80", "0.08", "0.16")
    assert as_maker["fee_asset"] == as_taker["fee_asset"] == market.quote.code
