"""Fills, fees, positions/P&L, replace and releases of the matcher on their own: no database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from accounts.exceptions import InvalidEntry
from accounts.models import Account, Asset, Bucket, EntryKind
from accounts.services import DEPOSIT, HOLD, RELEASE, EntrySpec, Leg, flow_legs
from trading.matching.books import Book
from trading.matching.fees import fee_rates, trade_charges
from trading.matching.fills import fill_apply, replace_apply
from trading.matching.lifecycle import OrderLifecycle
from trading.matching.positions import position_after
from trading.matching.store import BatchResult
from trading.models import Order

D = Decimal
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def order(**fields: object) -> Order:
    values: dict[str, object] = {
        "pk": 1,
        "side": Order.Side.BUY,
        "quantity": D("10"),
        "price": D("100"),
        "status": Order.Status.NEW,
        "filled_quantity": D(0),
        "filled_notional": D(0),
        "filled_quote": D(0),
        "fees": D(0),
        "held": D("1002"),
        "reason": "",
    }
    values.update(fields)
    return Order(**values)


# -- fees ---------------------------------------------------------------------------------


def test_charges_round_the_buyers_cumulative_notional_up_once_and_fees_down() -> None:
    first = trade_charges(
        buyer_notional_before=D(0),
        notional=D("10.001"),
        buyer_rate=D("0.001"),
        seller_rate=D("0.002"),
        precision=2,
    )
    assert first == (D("10.01"), D("0.01"), D("0.02"))
    second = trade_charges(
        buyer_notional_before=D("10.001"),
        notional=D("10.001"),
        buyer_rate=D("0.001"),
        seller_rate=D("0.002"),
        precision=2,
    )
    # 20.002 rounds up to 20.01 in all: the second fill pays 10.00, not 10.01 again.
    assert second.amount == D("10.00")
    assert first.amount + second.amount == D("20.01")


def test_a_zero_rate_pays_no_fee() -> None:
    charges = trade_charges(
        buyer_notional_before=D(0),
        notional=D("5"),
        buyer_rate=D(0),
        seller_rate=D("0.5"),
        precision=2,
    )
    assert charges == (D("5.00"), D(0), D("2.50"))


def test_maker_pays_its_maker_rate_and_taker_its_taker_rate() -> None:
    maker = SimpleNamespace(maker_fee_rate=D("0.001"), taker_fee_rate=D("0.009"))
    taker = SimpleNamespace(maker_fee_rate=D("0.008"), taker_fee_rate=D("0.002"))
    assert fee_rates(True, maker, taker) == (D("0.001"), D("0.002"))  # maker buys
    assert fee_rates(False, maker, taker) == (D("0.002"), D("0.001"))  # maker sells


# -- fills --------------------------------------------------------------------------------


def test_a_partial_fill_then_the_last_fill() -> None:
    buy = order()
    done = fill_apply(
        buy,
        quantity=D("4"),
        notional=D("400"),
        amount=D("400"),
        fee=D("0.4"),
        is_buyer=True,
        remaining_lots=6,
        now=NOW,
    )
    assert not done
    assert buy.status == Order.Status.PARTIALLY_FILLED
    assert (buy.filled_quantity, buy.filled_quote, buy.fees) == (D("4"), D("400"), D("0.4"))
    assert buy.held == D("601.6")
    assert buy.last_fill_at == NOW
    done = fill_apply(
        buy,
        quantity=D("6"),
        notional=D("606"),
        amount=D("606"),
        fee=D("0.6"),
        is_buyer=True,
        remaining_lots=0,
        now=NOW,
    )
    assert done
    assert buy.status == Order.Status.FILLED
    assert buy.closed_at == NOW
    assert buy.average_price == D("100.6")
    assert buy.held == D("-5.0")  # the caller releases what is left (here: nothing to)


def test_a_seller_delivers_the_base_quantity_from_its_hold() -> None:
    sell = order(side=Order.Side.SELL, held=D("10"), reason="was refused")
    fill_apply(
        sell,
        quantity=D("3"),
        notional=D("300"),
        amount=D("300"),
        fee=D("0.3"),
        is_buyer=False,
        remaining_lots=7,
        now=NOW,
    )
    assert sell.held == D("7")
    assert sell.fees == D("0.3")
    assert sell.reason == "was refused"  # only a fill that closes the order clears it


# -- replace ------------------------------------------------------------------------------


def test_replace_keeps_what_is_filled_and_sets_the_new_price() -> None:
    limit = order(filled_quantity=D("4"), reason="refused")
    replace_apply(limit, open_quantity=D("2"), price=D("99"))
    assert (limit.quantity, limit.price, limit.reason) == (D("6"), D("99"), "")


def test_replace_of_a_market_order_keeps_it_without_a_price() -> None:
    market = order(price=None)
    replace_apply(market, open_quantity=D("5"), price=D("99"))
    assert (market.quantity, market.price) == (D("5"), None)
    unchanged = order()
    replace_apply(unchanged, open_quantity=D("3"), price=None)
    assert unchanged.price == D("100")


# -- positions and P&L --------------------------------------------------------------------


def apply(*fills: tuple[str, str]) -> tuple[Decimal, Decimal, Decimal]:
    position = (D(0), D(0), D(0))
    for change, price in fills:
        position = position_after(*position, D(change), D(price))
    return position


def test_opening_and_adding_average_the_cost() -> None:
    assert apply(("2", "100")) == (D("2"), D("100"), D(0))
    quantity, cost, pnl = apply(("2", "100"), ("1", "103"))
    assert (quantity, cost, pnl) == (D("3"), D("101"), D(0))
    assert apply(("-2", "100"), ("-2", "90")) == (D("-4"), D("95"), D(0))


def test_a_partial_close_realises_pnl_and_keeps_the_cost() -> None:
    assert apply(("3", "100"), ("-1", "110")) == (D("2"), D("100"), D("10"))
    assert apply(("-3", "100"), ("1", "110")) == (D("-2"), D("100"), D("-10"))


def test_a_full_close_clears_the_cost() -> None:
    assert apply(("3", "100"), ("-3", "90")) == (D(0), D(0), D("-30"))


@pytest.mark.parametrize(
    ("fills", "expected"),
    [
        ((("2", "100"), ("-5", "110")), (D("-3"), D("110"), D("20"))),  # long to short
        ((("-2", "100"), ("5", "110")), (D("3"), D("110"), D("-20"))),  # short to long
    ],
)
def test_a_flip_realises_the_closed_part_and_opens_the_rest_at_the_fill_price(
    fills: tuple[tuple[str, str], ...], expected: tuple[Decimal, Decimal, Decimal]
) -> None:
    assert apply(*fills) == expected


def test_the_average_cost_is_kept_to_18_places() -> None:
    _, cost, _ = apply(("1", "1"), ("2", "2"))
    assert cost == D("1.666666666666666667")


# -- releases -----------------------------------------------------------------------------

ACCOUNT = Account(pk=5, kind=Account.Kind.CUSTOMER)
EXTERNAL = Account(pk=1, kind=Account.Kind.EXTERNAL)
USD = Asset(pk=2, code="USD", precision=2)
BTC = Asset(pk=3, code="BTC", precision=8)


def test_a_release_moves_held_to_available_on_the_account_itself() -> None:
    assert RELEASE.kind == EntryKind.RELEASE
    assert flow_legs(RELEASE, account=ACCOUNT, asset=USD, amount=D("1.50")) == (
        Leg(ACCOUNT, USD, Bucket.HELD, D("-1.50")),
        Leg(ACCOUNT, USD, Bucket.AVAILABLE, D("1.50")),
    )
    assert flow_legs(HOLD, account=ACCOUNT, asset=USD, amount=D(2)) == (
        Leg(ACCOUNT, USD, Bucket.AVAILABLE, D(-2)),
        Leg(ACCOUNT, USD, Bucket.HELD, D(2)),
    )


def test_a_flow_from_outside_takes_the_external_account() -> None:
    assert flow_legs(DEPOSIT, account=ACCOUNT, asset=USD, amount=D(7), external=EXTERNAL) == (
        Leg(EXTERNAL, USD, Bucket.AVAILABLE, D(-7)),
        Leg(ACCOUNT, USD, Bucket.AVAILABLE, D(7)),
    )
    with pytest.raises(InvalidEntry):
        flow_legs(DEPOSIT, account=ACCOUNT, asset=USD, amount=D(7))


def lifecycle() -> OrderLifecycle:
    accounts = {ACCOUNT.pk: ACCOUNT}
    return OrderLifecycle(account=accounts.__getitem__, fees_account=lambda: EXTERNAL, positions={})


@pytest.mark.parametrize(("side", "asset"), [(Order.Side.BUY, USD), (Order.Side.SELL, BTC)])
def test_closing_an_order_releases_its_hold_as_the_ledgers_release_flow(
    side: str, asset: Asset
) -> None:
    book = Book.__new__(Book)  # only what a close reads: no engine, no database
    book.instrument = SimpleNamespace(base=BTC, quote=USD)
    held = order(pk=9, side=side, account_id=ACCOUNT.pk, held=D("12.5"))
    book.orders = {held.pk: held}
    result = BatchResult(now=NOW)
    lifecycle().close(book, held, Order.Status.CANCELED, "user", result)
    assert result.entries == [
        EntrySpec(
            kind=EntryKind.RELEASE,
            reference="order 9",
            legs=(
                Leg(ACCOUNT, asset, Bucket.HELD, D("-12.5")),
                Leg(ACCOUNT, asset, Bucket.AVAILABLE, D("12.5")),
            ),
        )
    ]
    assert (held.status, held.reason, held.held, held.closed_at) == ("canceled", "user", 0, NOW)
    assert book.orders == {}
    assert result.changed == {9: held}
    assert result.account_orders[ACCOUNT.pk] == {9: held}


def test_closing_an_order_that_holds_nothing_posts_nothing() -> None:
    book = Book.__new__(Book)
    book.instrument = SimpleNamespace(base=BTC, quote=USD)
    empty = order(pk=4, account_id=ACCOUNT.pk, held=D(0))
    book.orders = {}
    result = BatchResult(now=NOW)
    lifecycle().close(book, empty, Order.Status.EXPIRED, "day", result)
    assert result.entries == []
    assert empty.status == Order.Status.EXPIRED
