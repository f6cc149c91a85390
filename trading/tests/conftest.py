"""Factories for the trading tests, and the real order path (relay + matcher) per test."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from accounts import services as ledger
from accounts.models import Account, Asset
from testing.helpers import manage  # noqa: F401 - tests import it from here too
from trading.models import Instrument, Order

_symbols = itertools.count(1)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
D = Decimal


@pytest.fixture
def asset(db) -> Callable[..., Asset]:
    def make(code: str, precision: int = 2) -> Asset:
        found, _ = Asset.objects.get_or_create(
            code=code, defaults={"name": code, "precision": precision}
        )
        return found

    return make


@pytest.fixture
def instrument(asset) -> Callable[..., Instrument]:
    """A fresh instrument (own base asset) per call: USD quote, tick 0.01, lot 1 by default."""

    def make(**fields: object) -> Instrument:
        number = next(_symbols)
        code = f"T{uuid.uuid4().hex[:5].upper()}{number}"
        defaults = {
            "symbol": code,
            "name": code,
            "base": asset(code, 0),
            "quote": asset("USD", 2),
            "tick_size": D("0.01"),
            "lot_size": D("1"),
            "maker_fee_rate": D("0.001"),
            "taker_fee_rate": D("0.002"),
        }
        return Instrument.objects.create(**(defaults | fields))

    return make


@pytest.fixture
def trader(db) -> Callable[..., Account]:
    """A user with a trading account funded through the deposit service."""

    def make(funds: dict[Asset, str] | None = None) -> Account:
        user = get_user_model().objects.create_user(f"t-{uuid.uuid4().hex[:10]}", password="x")  # noqa: S106
        account = ledger.account_open(user=user)
        for funded, amount in (funds or {}).items():
            ledger.deposit(
                account=account,
                asset=funded,
                amount=D(amount),
                reference="test funding",
                idempotency_key=f"fund-{uuid.uuid4()}",
            )
        return account

    return make


@pytest.fixture
def order_path(start_process, kafka_topics) -> Iterator[str]:
    """The relay and the matcher as real child processes, on topics of this test's own."""
    from django.conf import settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}."
    env = {"KAFKA_TOPIC_PREFIX": prefix, "LOG_LEVEL": "INFO"}
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        from tredye import kafka

        kafka.ensure_topics()
        relay = start_process(f"relay-{prefix}", *manage("run_outbox_relay"), env=env)
        matcher = start_process(f"matcher-{prefix}", *manage("run_matcher"), env=env)
        yield prefix
        for process in (matcher, relay):
            process.stop()


def wait_for(
    condition: Callable[[], object], timeout_s: float = 20.0, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def settled(order: Order, timeout_s: float = 20.0) -> Order:
    """Wait until the matcher has taken the order out of PENDING_NEW; return it fresh."""

    def check() -> Order | None:
        fresh = Order.objects.get(pk=order.pk)
        return None if fresh.status == Order.Status.PENDING_NEW else fresh

    return wait_for(check, timeout_s, f"order {order.pk} to leave pending_new")  # type: ignore[return-value]


@pytest.fixture
def queued_command(db) -> Callable[..., object]:
    """An order command accepted `age_s` ago that no matcher has applied (a stalled path)."""
    import datetime

    from django.utils import timezone

    from trading.models import Outbox
    from tredye import kafka

    def make(age_s: float = 30.0) -> Outbox:
        return Outbox.objects.create(
            topic=kafka.ORDERS,
            key="AAPL",
            type="order.place",
            seq=0,
            ts=0,
            data={"order_id": 1},
            created_at=timezone.now() - datetime.timedelta(seconds=age_s),
        )

    return make


@pytest.fixture
def market(instrument):
    """An open instrument (a test module may define its own)."""
    return instrument()


@pytest.fixture
def alice(trader, market):
    """A trader funded with 1000 of the market's quote and 10 of its base."""
    return trader({market.quote: "1000", market.base: "10"})
