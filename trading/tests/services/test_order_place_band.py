"""order_place's price band and the rules it checks, on both of its paths.

A priced order first tries one round trip with the instrument's rules as this process last read
them: PostgreSQL checks those rules again and the band around the reference price of the moment
(sql.PLACEMENT_WRITE). Anything refused there is decided again on the read-validate-write path.
Both paths must give the same answers; `fresh` clears the cache so that only the second runs.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Balance
from accounts.selectors import ledger_verify
from testing import helpers
from testing.factories import make_price_model
from trading import placement
from trading.exceptions import OrderRejected
from trading.models import Instrument, Order
from trading.rules import band_around
from trading.services import reference_prices_set

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["cached rules", "fresh read"])
def path(request):
    return request.param


def place(account, market, price, path, side="buy"):
    """One lot at `price` along `path` ("fresh read" clears the cached rules first)."""
    if path == "fresh read":
        placement.instrument_cache_clear()
    return helpers.place(account, market, side, price=price)


def with_reference(make_instrument, reference: str, **rules):
    market = make_instrument(**rules)
    make_price_model(market, price=reference, volatility="0.2", spread_bps=2, typical_size="1")
    return market


@pytest.mark.parametrize(
    ("reference", "pct", "tick", "low", "high"),
    [
        ("100.00", "10", "0.01", "90.00", "110.00"),
        ("100.00", "5", "0.05", "95.00", "105.00"),
        ("33.33", "7.5", "0.03", "30.84", "35.82"),  # edges not on the reference's grid
        ("0.05", "50", "0.01", "0.03", "0.07"),
        ("0.01", "90", "0.01", "0.01", "0.01"),  # the lowest edge is one tick at least
    ],
)
def test_the_band_edges_are_the_same_on_both_paths(
    make_instrument, make_account, path, reference, pct, tick, low, high
):
    market = with_reference(make_instrument, reference, price_band_pct=D(pct), tick_size=D(tick))
    assert band_around(market, D(reference)) == (D(low), D(high))
    account = make_account(funds={market.quote: "1000"})
    place(account, market, reference if D(reference) % D(tick) == 0 else low, "fresh read")
    for price in (low, high):
        assert place(account, market, price, path).status == Order.Status.PENDING_NEW
    for price in (D(low) - D(tick), D(high) + D(tick)):
        if price <= 0:
            continue
        with pytest.raises(OrderRejected) as refused:
            place(account, market, str(price), path)
        assert refused.value.code == "price_outside_band"
    assert Order.objects.filter(account=account).count() == 3
    assert ledger_verify() == []


def test_the_band_follows_the_reference_price_of_the_moment(make_instrument, make_account, path):
    market = with_reference(make_instrument, "100.00")  # band 90.00-110.00
    account = make_account(funds={market.quote: "1000"})
    place(account, market, "109.00", path)
    reference_prices_set(prices={market.symbol: D("90.00")})  # 81.00-99.00, as the feed does
    with pytest.raises(OrderRejected) as refused:
        place(account, market, "105.00", path)
    assert refused.value.code == "price_outside_band"
    assert place(account, market, "82.00", path).status == Order.Status.PENDING_NEW
    assert Order.objects.filter(account=account).count() == 2
    balance = Balance.objects.get(account=account, asset=market.quote)
    assert balance.held == D("109.22") + D("82.17")  # price plus the 0.2 % taker fee, rounded up
    assert ledger_verify() == []


@pytest.mark.parametrize(
    ("change", "price", "code"),
    [
        ({"tick_size": D("0.05")}, "10.01", "invalid_tick_size"),
        ({"lot_size": D("2")}, "10.00", "invalid_lot_size"),
        ({"min_quantity": D("5")}, "10.00", "quantity_too_small"),
        ({"status": Instrument.Status.HALTED}, "10.00", "instrument_halted"),
        ({"status": Instrument.Status.CLOSED}, "10.00", "instrument_closed"),
    ],
    ids=["tick", "lot", "minimum", "halted", "closed"],
)
def test_rules_changed_after_they_were_cached_are_enforced(
    make_instrument, make_account, change, price, code
):
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    place(account, market, "10.00", "fresh read")  # the rules are cached now
    Instrument.objects.filter(pk=market.pk).update(**change)
    with pytest.raises(OrderRejected) as refused:
        place(account, market, price, "cached rules")
    assert refused.value.code == code
    assert Order.objects.filter(account=account).count() == 1
    assert ledger_verify() == []


def test_an_order_valid_under_new_rules_is_placed_with_them(make_instrument, make_account):
    market = make_instrument()
    account = make_account(funds={market.quote: "1000"})
    place(account, market, "10.00", "fresh read")
    Instrument.objects.filter(pk=market.pk).update(taker_fee_rate=D("0.01"))
    order = place(account, market, "10.00", "cached rules")
    assert order.held == D("10.10")  # held with the new fee rate, not the cached one
    assert ledger_verify() == []


def test_a_priced_order_with_cached_rules_skips_the_read(
    monkeypatch, make_instrument, make_account
):
    import trading.services.placing as services

    market = with_reference(make_instrument, "100.00")
    account = make_account(funds={market.quote: "1000"})
    reads = []
    real = services.placement_read
    monkeypatch.setattr(services, "placement_read", lambda **kw: reads.append(kw) or real(**kw))
    place(account, market, "100.00", "fresh read")
    assert len(reads) == 1  # the first order reads the rules
    place(account, market, "101.00", "cached rules")
    assert len(reads) == 1  # the next one does not
    with pytest.raises(OrderRejected):
        place(account, market, "120.00", "cached rules")
    assert len(reads) == 2  # a refusal by the database is decided again with a fresh read
