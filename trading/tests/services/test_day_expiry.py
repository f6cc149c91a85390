"""End of the trading day: DAY orders expire through the matcher, their funds come back."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command

from accounts.models import Balance
from accounts.selectors import ledger_verify
from testing.helpers import place, settled, wait_for
from trading.models import Order

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def test_day_orders_expire_and_release_their_holds(order_path, make_instrument, make_account):
    # given: a resting DAY buy, a resting GTC buy, a DAY sell on another instrument
    market, other = make_instrument(), make_instrument()
    account = make_account(funds={market.quote: "1000", other.base: "5"})

    day = settled(
        place(account, market, "buy", client_order_id="day", price="10.00", time_in_force="day")
    )
    gtc = settled(
        place(account, market, "buy", client_order_id="gtc", price="10.00", time_in_force="gtc")
    )
    other_day = settled(
        place(
            account, other, "sell", client_order_id="other-day", price="10.00", time_in_force="day"
        )
    )
    assert day.status == gtc.status == other_day.status == Order.Status.NEW

    # when: the day ends for one instrument (the operator command the beat task also runs)
    call_command("expire_day", market.symbol)

    # then: its DAY order expires and gives back its 10.02 hold; the rest stays live
    def expired() -> Order | None:
        order = Order.objects.get(pk=day.pk)
        return order if order.status == Order.Status.EXPIRED else None

    day = wait_for(expired, 20, "the DAY order to expire")  # type: ignore[assignment]
    assert (day.reason, day.held) == ("day", D(0))
    assert Order.objects.get(pk=gtc.pk).status == Order.Status.NEW
    assert Order.objects.get(pk=other_day.pk).status == Order.Status.NEW
    quote = Balance.objects.get(account=account, asset=market.quote)
    assert (quote.available, quote.held) == (D("989.98"), D("10.02"))

    # and a DAY order placed after the close lives through the next day
    tomorrow = settled(
        place(account, market, "buy", client_order_id="day-2", price="10.00", time_in_force="day")
    )
    assert tomorrow.status == Order.Status.NEW
    assert ledger_verify() == []
