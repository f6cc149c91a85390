"""The matcher's PostgreSQL connections are cut (a failover, a restarted server): it backs off,
reconnects and applies the command it was on. A database error is never taken for a poison
command, so nothing is dead-lettered and no order is left pending."""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import override_settings

from accounts.selectors import ledger_verify
from testing import helpers
from testing.helpers import manage, read_topic, settled, terminate_backends, wait_for
from trading.models import Order, Trade
from tredye import kafka

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_matcher_survives_losing_its_database_connections(
    start_test_process, kafka_topics, make_instrument, make_account
):
    from django.conf import settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}."
    name = f"matcher-{uuid.uuid4().hex[:8]}"
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        kafka.ensure_topics()
        env = {"KAFKA_TOPIC_PREFIX": prefix}
        start_test_process("relay", *manage("run_outbox_relay"), env=env)
        # Connections kept between batches, as deployed (the test settings close them).
        matcher = start_test_process(
            "matcher",
            *manage("run_matcher"),
            env=env | {"PGAPPNAME": name, "TEST_CONN_MAX_AGE": "600"},
        )
        market = make_instrument()
        seller = make_account(funds={market.base: "10"})
        buyer = make_account(funds={market.quote: "1000"})

        def place(account, client_order_id, side):
            return helpers.place(
                account, market, side, client_order_id=client_order_id, price="10.00"
            )

        assert settled(place(seller, "s1", "sell")).status == Order.Status.NEW
        time.sleep(1.0)  # the matcher has relayed its events and waits for the next command
        # The matcher holds at least its Django connection and its lane connection.
        assert terminate_backends(name) >= 2

        buy = settled(place(buyer, "b1", "buy"), timeout_s=40)
        assert buy.status == Order.Status.FILLED
        assert Trade.objects.count() == 1
        # (a connection cut while idle is replaced before the next batch: no retry is needed)

        # It carries on as before: another pair trades.
        time.sleep(1.0)
        terminate_backends(name)
        assert settled(place(seller, "s2", "sell"), timeout_s=40).status == Order.Status.NEW
        assert settled(place(buyer, "b2", "buy")).status == Order.Status.FILLED
        assert Trade.objects.count() == 2
        assert read_topic(kafka.DEAD_LETTER, idle_s=1.0) == []
        # A lost connection is a database error, never a poison batch to split up.
        assert "retrying one by one" not in matcher.output()
        assert not Order.objects.filter(status=Order.Status.PENDING_NEW).exists()
        assert ledger_verify() == []


def test_the_relay_survives_losing_its_database_connections(
    start_test_process, kafka_topics, make_instrument, make_account
):
    from django.conf import settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}."
    name = f"relay-{uuid.uuid4().hex[:8]}"
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        # given the relay (its Django connection and the one it listens and locks on)
        kafka.ensure_topics()
        env = {"KAFKA_TOPIC_PREFIX": prefix}
        relay = start_test_process(
            "relay",
            *manage("run_outbox_relay"),
            env=env | {"PGAPPNAME": name, "TEST_CONN_MAX_AGE": "600"},
        )
        start_test_process("matcher", *manage("run_matcher"), env=env)
        market = make_instrument()
        seller = make_account(funds={market.base: "10"})

        def sell(number: int) -> Order:
            return helpers.place(
                seller, market, "sell", client_order_id=f"s{number}", price="10.00"
            )

        assert settled(sell(0)).status == Order.Status.NEW
        # when its connections are cut again and again, orders placed between the cuts
        for number in range(1, 4):
            time.sleep(0.5)
            assert terminate_backends(name) >= 1
            assert settled(sell(number), timeout_s=40).status == Order.Status.NEW
        # then it is still the same process, and it said what happened
        assert relay.popen.poll() is None, relay.output()
        wait_for(lambda: "retrying in" in relay.output(), what="the relay's retry log")
