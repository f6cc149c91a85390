"""Each guard of the one-statement placement write refuses on its own and is named exactly.

The write is called directly (not through `order_place`, whose Python checks would refuse
first) with the state changed under it, as a racing freeze, halt, rule change, price move,
withdrawal or retry would change it; it must write nothing and say which guard refused, and
`order_place` must turn that into the guard's own code.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import account_freeze, withdraw
from testing.factories import make_price_model
from testing.helpers import snapshot
from trading import placement, rules
from trading.exceptions import OrderRejected
from trading.matching.commands import PLACE
from trading.models import Instrument, Order
from trading.rules import hold_asset, hold_for
from trading.services import order_place, reference_prices_set
from tredye import kafka

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def banded(make_instrument):
    market = make_instrument()
    make_price_model(market, price="10.00", volatility="0.2", spread_bps=2, typical_size="1")
    return market


def write(account, market, *, client_order_id="w1", price="10.00", quantity="1"):
    market = Instrument.objects.select_related("base", "quote").get(pk=market.pk)
    now = timezone.now()
    fields = {
        "client_order_id": client_order_id,
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "post_only": False,
        "quantity": D(quantity),
        "price": D(price),
        "stop_price": None,
    }
    hold = hold_for(instrument=market, side="buy", open_quantity=D(quantity), price=D(price))
    order = placement.new_order(
        account=account,
        instrument=market,
        protection_price=None,
        held=hold,
        created_at=now,
        updated_at=now,
        **fields,
    )
    return placement.placement_write(
        order=order,
        rules_version=market.rules_version,
        asset_id=hold_asset(market, "buy").pk,
        hold=hold,
        memo="test",
        topic=kafka.ORDERS,
        type=PLACE,
        ts=kafka.now_ms(),
    )


def test_the_write_places_when_every_guard_passes(make_account, banded):
    account = make_account(funds={banded.quote: "100"})
    written = write(account, banded)
    assert written.refused is None
    assert Order.objects.get(pk=written.order_id).client_order_id == "w1"


def test_a_taken_client_order_id(make_account, banded):
    account = make_account(funds={banded.quote: "100"})
    write(account, banded)
    before = snapshot()
    assert write(account, banded).refused == placement.CLIENT_ORDER_ID
    assert snapshot() == before


def test_a_frozen_account(make_account, banded):
    account = make_account(funds={banded.quote: "100"})
    account_freeze(account=account, reason="test")
    before = snapshot()
    assert write(account, banded).refused == placement.ACCOUNT
    assert snapshot() == before


@pytest.mark.parametrize("status", [Instrument.Status.HALTED, Instrument.Status.CLOSED])
def test_an_instrument_no_longer_open(make_account, banded, status):
    account = make_account(funds={banded.quote: "100"})
    version = Instrument.objects.get(pk=banded.pk).rules_version
    Instrument.objects.filter(pk=banded.pk).update(status=status)
    before = snapshot()
    written = write(account, banded)
    assert (written.refused, written.instrument_status) == (placement.INSTRUMENT_STATUS, status)
    assert Instrument.objects.get(pk=banded.pk).rules_version == version  # not a rule
    assert snapshot() == before


@pytest.mark.parametrize("how", ["orm", "sql"])
def test_rules_changed_since_the_order_was_checked(make_account, banded, how):
    account = make_account(funds={banded.quote: "100"})
    stale = Instrument.objects.select_related("base", "quote").get(pk=banded.pk)
    if how == "orm":
        Instrument.objects.filter(pk=banded.pk).update(taker_fee_rate=D("0.003"))
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE trading_instrument SET min_quantity = 2 WHERE id = %s", [banded.pk]
            )
    assert Instrument.objects.get(pk=banded.pk).rules_version == stale.rules_version + 1
    before = snapshot()
    now = timezone.now()
    order = placement.new_order(
        account=account,
        instrument=stale,
        protection_price=None,
        held=D("10.02"),
        created_at=now,
        updated_at=now,
        client_order_id="w1",
        side="buy",
        type="limit",
        time_in_force="gtc",
        post_only=False,
        quantity=D("1"),
        price=D("10.00"),
        stop_price=None,
    )
    written = placement.placement_write(
        order=order,
        rules_version=stale.rules_version,
        asset_id=stale.quote.pk,
        hold=D("10.02"),
        memo="test",
        topic=kafka.ORDERS,
        type=PLACE,
        ts=kafka.now_ms(),
    )
    assert written.refused == placement.RULES_VERSION
    assert snapshot() == before


def test_a_price_the_reference_moved_out_of_the_band(make_account, banded):
    account = make_account(funds={banded.quote: "100"})
    reference_prices_set(prices={banded.symbol: D("20.00")})
    before = snapshot()
    written = write(account, banded)
    assert (written.refused, written.reference) == (placement.BAND, D("20.00"))
    assert snapshot() == before


def test_a_change_of_the_band_rule_reaches_both_paths(make_account, banded, monkeypatch):
    """The band is one function (`rules.band_around`): the Python check of `order_place` and
    the placement write's SQL guard both follow a change to it, with nothing else changed."""
    account = make_account(funds={banded.quote: "100"})
    reference_prices_set(prices={banded.symbol: D("10.00")})
    assert write(account, banded, client_order_id="before", price="10.50").order_id is not None

    def one_percent(instrument, reference):
        return None if reference is None else (reference * D("0.99"), reference * D("1.01"))

    monkeypatch.setattr(rules, "band_around", one_percent)
    placement.instrument_cache_clear()
    with pytest.raises(OrderRejected) as refused:
        order_place(account=account, symbol=banded.symbol, side="buy", quantity="1", price="10.50")
    assert refused.value.code == "price_outside_band"
    assert "10.5 is outside the price band 9.9–10.1" in str(refused.value)
    before = snapshot()
    written = write(account, banded, client_order_id="after", price="10.50")
    assert (written.refused, written.reference) == (placement.BAND, D("10.00"))
    assert snapshot() == before
    assert write(account, banded, client_order_id="inside", price="10.10").order_id is not None


def test_funds_withdrawn_meanwhile(make_account, banded):
    account = make_account(funds={banded.quote: "100"})
    withdraw(
        account=account, asset=banded.quote, amount=D("95"), reference="out", idempotency_key="w"
    )
    before = snapshot()
    assert write(account, banded).refused == placement.FUNDS
    assert snapshot() == before


def _status(status):
    return lambda market, account: Instrument.objects.filter(pk=market.pk).update(status=status)


def _fee(market, account):
    Instrument.objects.filter(pk=market.pk).update(maker_fee_rate=D("0.0005"))


def _reference(market, account):
    reference_prices_set(prices={market.symbol: D("20.00")})


def _withdraw(market, account):
    withdraw(
        account=account, asset=market.quote, amount=D("85"), reference="o", idempotency_key="k"
    )


def _freeze(market, account):
    account_freeze(account=account, reason="t")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_freeze, "account_frozen"),
        (_status(Instrument.Status.HALTED), "instrument_halted"),
        (_status(Instrument.Status.CLOSED), "instrument_closed"),
        (_reference, "price_outside_band"),
        (_withdraw, "insufficient_funds"),
    ],
)
def test_order_place_reports_each_guard_with_its_own_code(make_account, banded, change, code):
    """The cached rules pass the Python checks; the state changed under them is refused by the
    write and reported as the guard it is (not guessed, not insufficient_funds by default)."""
    account = make_account(funds={banded.quote: "100"})
    order_place(account=account, symbol=banded.symbol, side="buy", quantity="1", price="10.00")
    change(banded, account)
    before = snapshot()
    with pytest.raises(OrderRejected) as refused:
        order_place(account=account, symbol=banded.symbol, side="buy", quantity="1", price="10.00")
    assert refused.value.code == code
    assert snapshot() == before


def test_order_place_after_a_rule_change_places_under_the_new_rules(make_account, banded):
    """The write refuses the cached rules (rules_version); the order is read and checked again
    and placed with the new fee rates (rules_changed is only for a change between that read
    and its write)."""
    account = make_account(funds={banded.quote: "100"})
    order_place(account=account, symbol=banded.symbol, side="buy", quantity="1", price="10.00")
    _fee(banded, account)
    order = order_place(
        account=account, symbol=banded.symbol, side="buy", quantity="1", price="10.00"
    )
    assert order.maker_fee_rate == D("0.0005")
