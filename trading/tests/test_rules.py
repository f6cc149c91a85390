"""The trading rules (trading/rules.py) on their own: no database, plain objects."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading import rules
from trading.exceptions import OrderRejected
from trading.models import Instrument, Order

D = Decimal


def market(**overrides: object) -> SimpleNamespace:
    values = {
        "symbol": "ABC",
        "status": "open",
        "tick_size": D("0.01"),
        "lot_size": D("1"),
        "min_quantity": D("0"),
        "max_quantity": None,
        "price_band_pct": D("10"),
        "maker_fee_rate": D("0.001"),
        "taker_fee_rate": D("0.002"),
        "base": SimpleNamespace(code="ABC", precision=0),
        "quote": SimpleNamespace(code="USD", precision=2),
    }
    return SimpleNamespace(**(values | overrides))


def refused(call, *args: object, **kwargs: object) -> str:
    with pytest.raises(OrderRejected) as error:
        call(*args, **kwargs)
    return error.value.code


def test_the_rules_speak_the_models_values():
    assert rules.RULE_FIELDS == Instrument.RULES
    assert (rules.BUY, rules.SELL) == (Order.Side.BUY, Order.Side.SELL)
    assert (rules.OPEN, rules.HALTED) == (Instrument.Status.OPEN, Instrument.Status.HALTED)


@pytest.mark.parametrize(
    ("reference", "pct", "tick", "band"),
    [
        ("100.00", "10", "0.01", ("90.00", "110.00")),
        ("100.005", "10", "0.01", ("90.01", "110.00")),  # inward to whole ticks
        ("0.05", "50", "0.01", ("0.03", "0.07")),
        ("0.01", "90", "0.01", ("0.01", "0.01")),  # never below one tick
        ("250", "5", "0.25", ("237.50", "262.50")),
    ],
)
def test_the_band_is_around_the_reference_inward_to_ticks(reference, pct, tick, band):
    got = rules.band_around(market(price_band_pct=D(pct), tick_size=D(tick)), D(reference))
    assert got == (D(band[0]), D(band[1]))


def test_no_reference_no_band_and_no_market_order():
    assert rules.band_around(market(), None) is None
    assert refused(rules.protection_price, market(), "buy", None) == "no_reference_price"
    band = (D("90"), D("110"))
    assert rules.protection_price(market(), "buy", band) == D("110")
    assert rules.protection_price(market(), "sell", band) == D("90")


QUANTUM, TOP = D("1e-10"), D("1e20")


@settings(max_examples=300, deadline=None)
@given(
    pct=st.sampled_from(["0.5", "1", "10", "50", "100", "150"]),
    tick=st.sampled_from(["0.0001", "0.01", "0.25", "1"]),
    price_ticks=st.integers(1, 100_000),
    reference=st.decimals(D("0.0000000001"), D("1000000"), places=10),
)
def test_the_references_admitting_a_price_are_the_inverse_of_the_band(
    pct, tick, price_ticks, reference
):
    """What the placement write's SQL compares the reference of the moment with: `price` is
    inside the band around a reference exactly when the reference is inside this range."""
    rules_ = market(price_band_pct=D(pct), tick_size=D(tick))
    price = D(tick) * price_ticks
    low, high = rules.references_admitting(rules_, price, quantum=QUANTUM, top=TOP)
    for candidate in (reference, low, high, low - QUANTUM, high + QUANTUM):
        if candidate > 0:
            band = rules.band_around(rules_, candidate)
            assert (band[0] <= price <= band[1]) == (low <= candidate <= high), candidate


def test_a_price_no_reference_admits_gives_an_empty_range():
    low, high = rules.references_admitting(market(), D("0.01"), quantum=QUANTUM, top=D("1"))
    assert low <= high  # around 0.01 itself, say
    assert rules.band_around(market(), D("0.01")) == (D("0.01"), D("0.01"))
    low, high = rules.references_admitting(market(), D("500"), quantum=QUANTUM, top=D("100"))
    assert low > high  # 500 is above every band around references up to 100


def test_sizes_and_prices():
    limits = market(lot_size=D("5"), min_quantity=D("10"), max_quantity=D("100"))
    assert refused(rules.check_size, limits, D("12")) == "invalid_lot_size"
    assert refused(rules.check_size, limits, D("5")) == "quantity_too_small"
    assert refused(rules.check_size, limits, D("105")) == "quantity_too_large"
    rules.check_size(limits, D("100"))
    assert refused(rules.check_price, market(), D("10.001"), None) == "invalid_tick_size"
    band = (D("9.00"), D("11.00"))
    assert refused(rules.check_price, market(), D("11.01"), band) == "price_outside_band"
    rules.check_price(market(), D("11.00"), band)
    assert refused(rules.check_stop_price, market(), D("1.005")) == "invalid_tick_size"


def test_only_an_open_instrument_takes_orders():
    rules.check_open(market())
    assert refused(rules.check_open, market(status="halted")) == "instrument_halted"
    assert refused(rules.check_open, market(status="closed")) == "instrument_closed"


def test_a_buy_holds_quote_with_the_higher_fee_a_sell_holds_base():
    m = market()
    assert rules.hold_asset(m, "buy") is m.quote
    assert rules.hold_asset(m, "sell") is m.base
    # 3 x 10.01 = 30.03, plus 0.2 % = 0.06006, rounded up to the cent: 30.10
    assert rules.hold_for(instrument=m, side="buy", open_quantity=D("3"), price=D("10.01")) == D(
        "30.10"
    )
    assert rules.hold_for(
        instrument=m, side="buy", open_quantity=D("3"), price=D("10.01"), fee_rate=D("0")
    ) == D("30.03")
    assert rules.hold_for(instrument=m, side="sell", open_quantity=D("3"), price=D("1")) == D("3")
    assert rules.max_fee_rate(m) == D("0.002")
    assert rules.fee_rates(m) == {"maker_fee_rate": D("0.001"), "taker_fee_rate": D("0.002")}
