"""End to end on the real services: order_place → outbox → relay → Kafka → matcher → PG."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Account, Balance
from accounts.selectors import ledger_verify
from testing.helpers import place, settled, wait_for
from trading.models import Order, Position, Trade
from trading.services import order_cancel

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def balance(account: Account, asset) -> tuple[Decimal, Decimal, Decimal]:
    row = Balance.objects.filter(account=account, asset=asset).first()
    if row is None:
        return (D(0), D(0), D(0))
    return (row.available, row.held, row.pending)


def test_limit_order_rests_and_holds(order_path, make_instrument, make_account):
    # given
    market = make_instrument()
    buyer = make_account(funds={market.quote: "1000"})
    # when
    order = settled(place(buyer, market, "buy", "10", client_order_id="b1", price="20.00"))
    # then
    assert order.status == Order.Status.NEW
    # 200.00 notional + 0.40 at the larger (taker) fee rate
    assert balance(buyer, market.quote) == (D("799.60"), D("200.40"), D("0"))
    assert order.held == D("200.40")
    assert ledger_verify() == []


def test_crossing_orders_fill_both_sides(order_path, make_instrument, make_account):
    market = make_instrument()
    seller = make_account(funds={market.base: "10"})
    buyer = make_account(funds={market.quote: "1000"})
    sell = settled(place(seller, market, "sell", "10", client_order_id="s1", price="20.00"))
    buy = settled(place(buyer, market, "buy", "10", client_order_id="b1", price="21.00"))
    sell.refresh_from_db()
    assert buy.status == sell.status == Order.Status.FILLED
    trade = Trade.objects.get(instrument=market)
    assert (trade.price, trade.quantity, trade.aggressor_side) == (D("20"), D("10"), "buy")
    # buyer (taker, 0.2 %) paid 200.00 + 0.40; the rest of the 210.42 hold came back
    assert balance(buyer, market.quote) == (D("799.60"), D("0"), D("0"))
    assert balance(buyer, market.base) == (D("0"), D("0"), D("10"))
    # seller (maker, 0.1 %) gets 200.00 - 0.20, pending settlement
    assert balance(seller, market.quote) == (D("0"), D("0"), D("199.80"))
    assert balance(seller, market.base) == (D("0"), D("0"), D("0"))
    assert buy.fees == D("0.40")
    assert sell.fees == D("0.20")
    assert Position.objects.get(account=buyer, instrument=market).quantity == D("10")
    assert Position.objects.get(account=seller, instrument=market).quantity == D("-10")
    assert ledger_verify() == []


def test_partial_fill_then_cancel(order_path, make_instrument, make_account):
    market = make_instrument()
    seller = make_account(funds={market.base: "4"})
    buyer = make_account(funds={market.quote: "1000"})
    buy = settled(place(buyer, market, "buy", "10", client_order_id="b", price="10.00"))
    assert buy.status == Order.Status.NEW
    sell = settled(place(seller, market, "sell", "4", client_order_id="s", price="10.00"))
    assert sell.status == Order.Status.FILLED
    buy.refresh_from_db()
    assert buy.status == Order.Status.PARTIALLY_FILLED
    assert buy.filled_quantity == D("4")
    # 6 left at 10.00: the hold still covers 60.00 + the fee margin
    assert balance(buyer, market.quote)[1] == buy.held
    order_cancel(account=buyer, order_id=buy.pk)
    wait_for(lambda: Order.objects.get(pk=buy.pk).status == Order.Status.CANCELED, what="cancel")
    buy.refresh_from_db()
    assert buy.held == 0
    assert buy.filled_quantity == D("4")
    # paid 40.00 + 0.04 maker fee, the rest is available again
    assert balance(buyer, market.quote) == (D("959.96"), D("0"), D("0"))
    assert ledger_verify() == []


def test_ioc_fok_post_only(order_path, make_instrument, make_account):
    market = make_instrument()
    seller = make_account(funds={market.base: "5"})
    buyer = make_account(funds={market.quote: "1000"})
    settled(place(seller, market, "sell", "5", client_order_id="s", price="10.00"))
    fok = settled(
        place(buyer, market, "buy", "6", client_order_id="fok", price="10.00", time_in_force="fok")
    )
    assert (fok.status, fok.reason, fok.held) == ("rejected", "fok_unfillable", 0)
    post = settled(
        place(buyer, market, "buy", "1", client_order_id="post", price="10.00", post_only=True)
    )
    assert (post.status, post.reason) == ("rejected", "post_only_would_cross")
    ioc = settled(
        place(buyer, market, "buy", "8", client_order_id="ioc", price="10.00", time_in_force="ioc")
    )
    assert (ioc.status, ioc.filled_quantity, ioc.reason) == ("canceled", D("5"), "ioc_remainder")
    assert balance(buyer, market.quote) == (D("1000") - D("50.10"), D("0"), D("0"))
    assert balance(buyer, market.base) == (D("0"), D("0"), D("5"))
    assert ledger_verify() == []


def test_stop_order_triggers_on_trade(order_path, make_instrument, make_account):
    market = make_instrument()
    seller = make_account(funds={market.base: "10"})
    buyer = make_account(funds={market.quote: "1000"})
    stop_buyer = make_account(funds={market.quote: "1000"})
    settled(place(seller, market, "sell", "10", client_order_id="s", price="10.00"))
    stop = settled(
        place(
            stop_buyer,
            market,
            "buy",
            "3",
            client_order_id="stop",
            type="stop_limit",
            price="10.00",
            stop_price="10.00",
        )
    )
    assert stop.status == Order.Status.NEW
    assert stop.filled_quantity == 0
    settled(place(buyer, market, "buy", "2", client_order_id="b", price="10.00"))
    wait_for(lambda: Order.objects.get(pk=stop.pk).status == "filled", what="stop fill")
    stop.refresh_from_db()
    assert stop.triggered_at is not None
    assert stop.filled_quantity == D("3")
    assert balance(stop_buyer, market.base) == (D("0"), D("0"), D("3"))
    assert ledger_verify() == []


def test_self_trade_prevention_cancels_the_newest(order_path, make_instrument, make_account):
    market = make_instrument()
    both = make_account(funds={market.base: "5", market.quote: "1000"})
    resting = settled(place(both, market, "sell", "5", client_order_id="s", price="10.00"))
    incoming = settled(place(both, market, "buy", "5", client_order_id="b", price="10.00"))
    resting.refresh_from_db()
    assert (incoming.status, incoming.reason) == ("canceled", "self_trade")
    assert resting.status == "new"
    assert not Trade.objects.filter(instrument=market).exists()
    assert balance(both, market.quote) == (D("1000"), D("0"), D("0"))
    assert ledger_verify() == []
