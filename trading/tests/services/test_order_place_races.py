"""order_place raced from many threads on one account: nothing double-spent, one order per id."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connections

from accounts.models import Balance
from accounts.selectors import ledger_verify
from trading.exceptions import OrderRejected
from trading.models import Order, Outbox
from trading.services import order_place

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def race(count: int, place) -> list[object]:
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = place(index)
        except OrderRejected as error:
            results[index] = error.code
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_buys_never_hold_more_than_available(instrument, trader):
    # given: 1000.00 USD, each buy of 1 at 100.00 holds 100.20 (fee at 0.2 %)
    market = instrument()
    account = trader({market.quote: "1000"})
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


def test_a_client_order_id_raced_gives_one_order(instrument, trader):
    market = instrument()
    account = trader({market.base: "100"})
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
