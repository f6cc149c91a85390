"""Issue 9: a broker that comes back empty loses nothing.

The local broker keeps topics in memory, so killing it and starting a new one on the same port
is exactly "Kafka came back without its history": new topics (new ids), offsets from zero,
acknowledged commands gone. Every order placed before, during and after must still reach a
final or resting state, no fill may be lost or doubled, the ledger must balance, and every
trade in PostgreSQL must be on the new `trades` topic exactly once — with no process
restarted by hand (first test), and across a restart of everything as `make run` twice does it
(second test).
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import close_old_connections
from django.test import override_settings

from accounts.selectors import ledger_verify
from testing import helpers
from testing.helpers import manage, read_topic, wait_for
from trading.models import Order, Outbox, Trade
from tredye import kafka

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lossy_kafka(private_broker) -> Iterator[dict[str, str]]:
    """Settings and child-process environment for a private broker and topic prefix."""
    prefix = f"lossy{uuid.uuid4().hex[:8]}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": private_broker.address,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_METADATA_MAX_AGE_MS": "1000",
        "OUTBOX_RESEND_AFTER_S": "5",
        "OUTBOX_IDENTITY_CHECK_S": "0.5",
        "LOG_LEVEL": "INFO",
    }
    with override_settings(
        KAFKA_BOOTSTRAP_SERVERS=[private_broker.address], KAFKA_TOPIC_PREFIX=prefix
    ):
        kafka.ensure_topics()
        yield env


def _market(make_instrument, make_account):
    market = make_instrument()
    seller = make_account(funds={market.base: "100000"})
    buyer = make_account(funds={market.quote: "10000000"})
    return market, seller, buyer


def _buy(market, buyer, number: int) -> Order:
    """A marketable buy of one lot (the seller rests plenty at 100.00)."""
    return helpers.place(
        buyer, market, "buy", client_order_id=f"buy-{number}", price="100.00", time_in_force="ioc"
    )


def _rest_sells(market, seller, quantity: int) -> Order:
    return helpers.place(seller, market, "sell", str(quantity), price="100.00")


def _all_done(market) -> bool:
    close_old_connections()
    pending = Order.objects.filter(instrument=market, status=Order.Status.PENDING_NEW).exists()
    unapplied = Outbox.objects.filter(topic=kafka.ORDERS, applied_at__isnull=True).exists()
    return not pending and not unapplied


def _assert_exactly_once(market, buys: list[Order]) -> None:
    """Every buy filled once; fills, positions, holds and the ledger agree; every trade is on
    the (new) trades topic exactly once."""
    for buy in buys:
        fresh = Order.objects.get(pk=buy.pk)
        assert (fresh.status, fresh.filled_quantity) == (Order.Status.FILLED, D("1")), buy.pk
    trades = list(Trade.objects.filter(instrument=market))
    assert sum(t.quantity for t in trades) == len(buys)
    assert ledger_verify() == []
    stored = {(market.symbol, t.seq) for t in trades}

    def on_topic() -> Counter | None:
        seen = Counter(
            (kafka.decode(r.value).key, kafka.decode(r.value).seq)
            for r in read_topic(kafka.TRADES, idle_s=1.0)
        )
        return seen if set(seen) >= stored else None

    seen = wait_for(on_topic, timeout_s=60, what="every trade on the new trades topic")
    assert set(seen) == stored
    assert max(seen.values()) == 1


@pytest.mark.timeout(300)
def test_broker_comes_back_empty_while_everything_runs(
    start_test_process, private_broker, lossy_kafka, make_instrument, make_account
):
    # given the order path running on a broker of its own, with a resting seller
    market, seller, buyer = _market(make_instrument, make_account)
    start_test_process("relay", *manage("run_outbox_relay"), env=lossy_kafka)
    matcher = start_test_process("matcher", *manage("run_matcher"), env=lossy_kafka)
    _rest_sells(market, seller, 1000)
    buys = [_buy(market, buyer, n) for n in range(20)]
    wait_for(lambda: _all_done(market), timeout_s=60, what="the first orders to be matched")

    # when the broker acknowledges commands the matcher has not read yet (it is paused), then
    # dies; orders are placed while it is away; and a new, empty one starts on the same port
    matcher.popen.send_signal(signal.SIGSTOP)
    acknowledged = [_buy(market, buyer, n) for n in range(20, 30)]
    wait_for(
        lambda: not Outbox.objects.filter(topic=kafka.ORDERS, sent_at__isnull=True).exists(),
        timeout_s=30,
        what="the broker to acknowledge the commands",
    )
    private_broker.kill()
    matcher.popen.send_signal(signal.SIGCONT)
    buys += acknowledged
    buys += [_buy(market, buyer, n) for n in range(30, 50)]
    private_broker.start()
    buys += [_buy(market, buyer, n) for n in range(50, 70)]

    # then every order is matched, exactly once, without restarting anything
    wait_for(lambda: _all_done(market), timeout_s=120, what="every order to be matched")
    assert matcher.popen.poll() is None, matcher.output()
    # it saw the new topic: when it reassigned (its checkpoint's topic id is not the new one's)
    # or, first, when its metadata showed the topic's id change (the worker base's check)
    seen = matcher.output()
    assert "reading it from the start" in seen or "was replaced" in seen, seen
    _assert_exactly_once(market, buys)


@pytest.mark.timeout(300)
def test_run_again_on_a_new_broker_with_the_history_of_a_previous_run(
    start_test_process, private_broker, lossy_kafka, make_instrument, make_account
):
    # given a first run that matched orders, then stopped (Ctrl-C) with its broker
    market, seller, buyer = _market(make_instrument, make_account)
    relay = start_test_process("relay-1", *manage("run_outbox_relay"), env=lossy_kafka)
    matcher = start_test_process("matcher-1", *manage("run_matcher"), env=lossy_kafka)
    _rest_sells(market, seller, 1000)
    buys = [_buy(market, buyer, n) for n in range(30)]
    wait_for(lambda: _all_done(market), timeout_s=60, what="the first run to match its orders")
    matcher.stop()
    relay.stop()
    private_broker.kill()

    # when everything starts again on a new, empty broker
    private_broker.start()
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=[private_broker.address]):
        kafka.ensure_topics()
    start_test_process("relay-2", *manage("run_outbox_relay"), env=lossy_kafka)
    start_test_process("matcher-2", *manage("run_matcher"), env=lossy_kafka)
    buys += [_buy(market, buyer, n) for n in range(30, 40)]

    # then the new orders fill, and the first run's trades are on the new topic once each
    wait_for(lambda: _all_done(market), timeout_s=90, what="the second run to match orders")
    _assert_exactly_once(market, buys)
