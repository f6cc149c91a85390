"""Bad records on the orders topic go to the dead-letter topic and change nothing."""

from __future__ import annotations

import pytest
from django.test import override_settings

from accounts.selectors import ledger_verify
from testing.helpers import read_topic, settled
from trading.models import Order
from trading.services import order_place
from tredye import kafka

pytestmark = pytest.mark.django_db(transaction=True)


def test_poison_commands_are_dead_lettered(order_path, make_instrument, make_account):
    with override_settings(KAFKA_TOPIC_PREFIX=order_path):
        market = make_instrument()
        buyer = make_account(funds={market.quote: "1000"})
        producer = kafka.producer()
        topic = kafka.topic(kafka.ORDERS)
        key = market.symbol.encode()
        bad = [
            b"not json at all",
            kafka.encode(type="order.place", key=market.symbol, seq=0, data={"order_id": "x"}),
            kafka.encode(type="order.place", key=market.symbol, seq=0, data={"order_id": 99999}),
            # beyond PostgreSQL's bigint
            kafka.encode(type="order.place", key=market.symbol, seq=0, data={"order_id": 2**63}),
            kafka.encode(type="order.nuke", key=market.symbol, seq=0, data={"order_id": 1}),
            # end of day for an instrument that does not exist
            kafka.encode(type="book.expire_day", key="NOSUCH", seq=0, data={}),
        ]
        for value in bad:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        # the matcher carries on: a good order after them is accepted
        order = settled(
            order_place(
                account=buyer,
                symbol=market.symbol,
                client_order_id="ok",
                side="buy",
                quantity="1",
                price="10.00",
            )
        )
        assert order.status == Order.Status.NEW
        dead = [record.value for record in read_topic(kafka.DEAD_LETTER)]
        assert sorted(dead) == sorted(bad)
        assert Order.objects.count() == 1
        assert ledger_verify() == []
