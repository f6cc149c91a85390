"""Trading's invariants in `ledger_verify`: each finds the break it is written for."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import F

from accounts.selectors import ledger_verify
from testing.factories import make_account, make_instrument
from trading.models import Order
from trading.services import order_place

D = Decimal
pytestmark = pytest.mark.django_db


def held_breaks() -> list[str]:
    return [b.detail for b in ledger_verify() if b.invariant == "held_equals_open_orders"]


def test_held_equals_open_orders_checks_the_asset_each_side_holds():
    """A buy holds the quote and a sell the base (`rules.hold_asset`, which the check's SQL
    is built from): an order holding more than its balance shows is reported on that asset."""
    market = make_instrument()
    account = make_account(funds={market.quote: "1000", market.base: "10"})
    buy = order_place(
        account=account, symbol=market.symbol, side="buy", quantity="1", price="10.00"
    )
    sell = order_place(
        account=account, symbol=market.symbol, side="sell", quantity="2", price="30.00"
    )
    assert held_breaks() == []
    Order.objects.filter(pk=buy.pk).update(held=F("held") + 1)
    assert held_breaks() == [
        f"account #{account.pk} {market.quote.code}: held is 10.02 but its open orders hold 11.02"
    ]
    Order.objects.filter(pk=buy.pk).update(held=F("held") - 1)
    Order.objects.filter(pk=sell.pk).update(held=F("held") - 1)
    assert held_breaks() == [
        f"account #{account.pk} {market.base.code}: held is 2 but its open orders hold 1"
    ]
