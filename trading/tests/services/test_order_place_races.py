"""order_place raced from many threads on one account: nothing double-spent, one order per id."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Balance
from accounts.selectors import ledger_verify
from testing.helpers import place
from testing.helpers import race as race_outcomes
from trading.exceptions import OrderRejected
from trading.models import Order, Outbox
from trading.services import order_place

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def race(count: int, place) -> list[object]:
    """Each racing call's order, or the code it was refused with."""
    return [
        outcome.code if isinstance(outcome, OrderRejected) else outcome
        for outcome in race_outcomes(count, place)
    ]


def test_concurrent_buys_never_hold_more_than_available(make_instrument, make_account):
    # given: 1000.00 USD, each buy of 1 at 100.00 holds 100.20 (fee at 0.2 %)
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    # when
    results = race(
        16,
        lambda index: order_place(
            account=account,
            symbol=market.symbol,
            client_order_id=f"c{index}",
            side="buy",
            quantity="1",
            price="100.00",
        ),
    )
    # then: 9 fit (901.80), 7 are refused
    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 9
    assert sorted(r for r in results if isinstance(r, str)) == ["insufficient_funds"] * 7
    balance = Balance.objects.get(account=account, asset=market.quote)
    assert (balance.available, balance.held) == (D("98.20"), D("901.80"))
    assert Outbox.objects.filter(key=market.symbol).count() == 9
    assert ledger_verify() == []


def test_a_client_order_id_raced_gives_one_order(make_instrument, make_account):
    market = make_instrument()
    account = make_account(funds={market.base: "100"})
    results = race(
        8,
        lambda _: order_place(
            account=account,
            symbol=market.symbol,
            client_order_id="same",
            side="sell",
            quantity="10",
            price="5.00",
        ),
    )
    assert len({r.pk for r in results}) == 1  # type: ignore[union-attr]
    assert Order.objects.filter(account=account).count() == 1
    balance = Balance.objects.get(account=account, asset=market.base)
    assert (balance.available, balance.held) == (D("90"), D("10"))
    assert ledger_verify() == []


# Between order_place's read and its write (two statements, each committed on its own), another
# session changes what the order depends on. The write checks it again and writes nothing.


def change_after_read(monkeypatch, change) -> None:
    """Run `change` (another session's committed write) right after order_place's read."""
    import trading.services.placing as services

    real = services.placement_read
    done = []

    def read_then_change(**kwargs):
        placement = real(**kwargs)
        if not done:
            done.append(True)
            change()
        return placement

    monkeypatch.setattr(services, "placement_read", read_then_change)


def buy(account, market, client_order_id="between"):
    return place(account, market, "buy", client_order_id=client_order_id, price="100.00")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            lambda account, market: account.__class__.objects.filter(pk=account.pk).update(
                status="frozen"
            ),
            "account_frozen",
        ),
        (
            lambda account, market: market.__class__.objects.filter(pk=market.pk).update(
                status="halted"
            ),
            "instrument_halted",
        ),
        (
            lambda account, market: market.__class__.objects.filter(pk=market.pk).update(
                taker_fee_rate=D("0.01")
            ),
            "rules_changed",
        ),
        (
            lambda account, market: market.__class__.objects.filter(pk=market.pk).update(
                tick_size=D("0.05")
            ),
            "rules_changed",
        ),
    ],
    ids=["frozen", "halted", "fee raised", "tick size"],
)
def test_a_change_between_read_and_write_is_refused(
    monkeypatch, make_instrument, make_account, change, code
):
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    change_after_read(monkeypatch, lambda: change(account, market))
    with pytest.raises(OrderRejected) as refused:
        buy(account, market)
    assert refused.value.code == code
    assert not Order.objects.filter(account=account).exists()
    assert not Outbox.objects.filter(key=market.symbol).exists()
    balance = Balance.objects.get(account=account, asset=market.quote)
    assert (balance.available, balance.held) == (D("1000"), D("0"))
    assert ledger_verify() == []


def test_the_same_client_order_id_placed_between_read_and_write_is_returned(
    monkeypatch, make_instrument, make_account
):
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    first: list[Order] = []
    change_after_read(monkeypatch, lambda: first.append(buy(account, market, "twice")))
    again = buy(account, market, "twice")
    assert again.pk == first[0].pk
    assert Order.objects.filter(account=account).count() == 1
    balance = Balance.objects.get(account=account, asset=market.quote)
    assert (balance.available, balance.held) == (D("899.80"), D("100.20"))
    assert ledger_verify() == []


def test_order_place_refuses_to_run_inside_a_transaction(make_instrument, make_account):
    from django.db import transaction

    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    with pytest.raises(RuntimeError, match="outside any transaction"), transaction.atomic():
        buy(account, market)
    assert not Order.objects.filter(account=account).exists()


def test_the_order_returned_is_the_row_written(make_instrument, make_account):
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    placed = buy(account, market, "as-written")
    stored = Order.objects.get(pk=placed.pk)
    for field in Order._meta.concrete_fields:
        assert getattr(placed, field.attname) == getattr(stored, field.attname), field.name
    assert placed.instrument.symbol == market.symbol
    assert placed.account == account
    assert not placed._state.adding
