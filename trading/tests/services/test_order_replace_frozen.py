"""A frozen account may not hold more funds, whichever path asks: placing, or enlarging an
order by replace (which used to skip the check)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.services import account_freeze
from testing.helpers import snapshot
from trading.exceptions import OrderRejected
from trading.models import Order
from trading.services import order_place, order_replace

D = Decimal
pytestmark = pytest.mark.django_db


def resting_buy(alice, market) -> Order:
    order = order_place(
        account=alice, symbol=market.symbol, side="buy", quantity="1", price="10.00"
    )
    Order.objects.filter(pk=order.pk).update(status=Order.Status.NEW)  # the matcher took it
    return order


def test_a_frozen_account_cannot_enlarge_an_order_by_replace(alice, market):
    order = resting_buy(alice, market)
    account_freeze(account=alice, reason="test")
    before = snapshot()
    with pytest.raises(OrderRejected) as refused:
        order_replace(account=alice, order_id=order.pk, quantity="5", price="10.00")
    assert refused.value.code == "account_frozen"
    assert snapshot() == before


def test_a_frozen_account_may_still_shrink_an_order_by_replace(alice, market):
    """Shrinking holds nothing more: it only releases, which a frozen account may."""
    order = resting_buy(alice, market)
    account_freeze(account=alice, reason="test")
    order_replace(account=alice, order_id=order.pk, quantity="1", price="9.00")
    order.refresh_from_db()
    assert order.command_seq == 1
    assert order.held_for_replace == D(0)
