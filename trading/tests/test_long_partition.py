"""Issue 9: the matcher keeps up on a partition of more than 50,000 record batches.

The local broker serves a fetch in time proportional to the batches in the partition, and
answers empty when that takes longer than the fetch's wait: with our small wait the matcher
starved, silently, within the hour of a demo. Here 50,000 one-record batches (duplicates of an
applied command, which the matcher must skip) are written to the partition of the symbol
while the matcher runs; then a marketable order must still fill, and the matcher must report
itself caught up.
"""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.test import override_settings

from testing import helpers
from testing.helpers import manage, read_topic, settled, wait_for
from trading.models import Order
from trading.outbox import outbox_id
from tredye import kafka, status

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)

BATCHES = 50_000
THREADS = 4


def _fill(record, count: int) -> None:
    """Write `count` copies of a record, each in a batch of its own (one send at a time)."""
    producer = kafka.producer(linger_ms=0, enable_idempotence=False, acks=1)
    try:
        for _ in range(count):
            producer.send(
                record.topic,
                key=record.key,
                value=record.value,
                headers=record.headers,
                partition=record.partition,
            ).get(timeout=30)
    finally:
        producer.close()


@pytest.mark.timeout(600)
def test_matcher_keeps_up_past_50000_batches(
    start_test_process, private_broker, make_instrument, make_account
):
    prefix = f"long{uuid.uuid4().hex[:8]}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": private_broker.address,
        "KAFKA_TOPIC_PREFIX": prefix,
        "LOG_LEVEL": "INFO",
    }
    with override_settings(
        KAFKA_BOOTSTRAP_SERVERS=[private_broker.address], KAFKA_TOPIC_PREFIX=prefix
    ):
        # given the order path, a resting seller and one applied buy
        kafka.ensure_topics()
        market = make_instrument()
        seller = make_account(funds={market.base: "1000"})
        buyer = make_account(funds={market.quote: "100000"})
        start_test_process("relay", *manage("run_outbox_relay"), env=env)
        matcher = start_test_process("matcher", *manage("run_matcher"), env=env)

        def buy(number: int) -> Order:
            return helpers.place(
                buyer,
                market,
                "buy",
                client_order_id=f"b{number}",
                price="100.00",
                time_in_force="ioc",
            )

        helpers.place(seller, market, "sell", "100", client_order_id="s", price="100.00")
        first = settled(buy(0), timeout_s=60)
        assert first.status == Order.Status.FILLED
        place = next(
            r
            for r in read_topic(kafka.ORDERS)
            if r.key == market.symbol.encode()
            and kafka.decode(r.value).data["order_id"] == first.pk
        )
        assert outbox_id(place) is not None

        # when its partition is driven past 50,000 record batches while the matcher reads it
        started = time.monotonic()
        threads = [
            threading.Thread(target=_fill, args=(place, BATCHES // THREADS)) for _ in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        filled_in = time.monotonic() - started

        # then a new order still fills, and the matcher reports itself caught up
        order = settled(buy(1), timeout_s=60)
        assert order.status == Order.Status.FILLED
        assert Order.objects.get(pk=first.pk).filled_quantity == D("1")  # skipped 50,000 times

        def caught_up() -> dict | None:
            report = status.worker_reports().get("matcher")
            return report if report and report["lag"] == 0 else None

        wait_for(caught_up, timeout_s=30, what="the matcher to report lag 0")
        assert matcher.popen.poll() is None
        print(f"{BATCHES} batches written in {filled_in:.0f}s")  # noqa: T201 - shown with -s
