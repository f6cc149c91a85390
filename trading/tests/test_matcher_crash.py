"""Acceptance 2: SIGKILL the matcher at random moments while orders flow; nothing is lost,
nothing is doubled, and every trade is exactly once on the `trades` topic."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.db import close_old_connections
from django.test import override_settings

from accounts.selectors import ledger_verify
from testing.helpers import manage, read_topic, wait_for
from trading.engine import Accepted, Canceled, OrderBook, OrderType, Rejected, Side, TimeInForce
from trading.engine import Order as EngineOrder
from trading.engine import Trade as EngineTrade
from trading.exceptions import TradingError
from trading.models import Order, Trade
from trading.services import order_cancel, order_place
from tredye import kafka

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)

SEED = 20261121
ORDERS = 3000
KILLS = 10


def replay(records: list, orders: dict[int, Order]) -> tuple[dict[int, tuple], set[tuple]]:
    """Run the commands of the orders topic once, uninterrupted, through fresh engine books."""
    books: dict[str, OrderBook] = {}
    state: dict[int, list] = {}  # order id -> [status, filled lots]
    applied: dict[int, int] = {}
    trades: set[tuple] = set()
    for record in records:
        envelope = kafka.decode(record.value)
        order = orders[envelope.data["order_id"]]
        book = books.setdefault(envelope.key, OrderBook(envelope.key))
        if envelope.type == "order.place":
            if order.pk in state:
                continue
            state[order.pk] = ["pending_new", 0]
            events = book.submit(
                EngineOrder(
                    order.pk,
                    order.account_id,
                    Side.BUY if order.side == "buy" else Side.SELL,
                    OrderType.LIMIT,
                    int(order.quantity),
                    int(order.price * 100),
                    None,
                    TimeInForce.IOC if order.time_in_force == "ioc" else TimeInForce.GTC,
                    order.post_only,
                )
            )
        else:
            seq = envelope.data["seq"]
            if seq <= applied.get(order.pk, 0):
                continue
            applied[order.pk] = seq
            current = state.setdefault(order.pk, ["pending_new", 0])
            if current[0] == "pending_new":
                current[0] = "canceled"
                continue
            events = book.cancel(order.pk)
        for event in events:
            if isinstance(event, Accepted):
                state[event.order_id][0] = "new"
            elif isinstance(event, Rejected) and state[event.order_id][0] == "pending_new":
                state[event.order_id][0] = "rejected"
            elif isinstance(event, Canceled) and event.remaining == 0:
                state[event.order_id][0] = "canceled"
            elif isinstance(event, EngineTrade):
                trades.add(
                    (
                        envelope.key,
                        event.seq,
                        event.maker_order_id,
                        event.taker_order_id,
                        event.price,
                        event.qty,
                    )
                )
                for oid, remaining in (
                    (event.maker_order_id, event.maker_remaining),
                    (event.taker_order_id, event.taker_remaining),
                ):
                    state[oid][1] += event.qty
                    state[oid][0] = "filled" if remaining == 0 else "partially_filled"
    return {oid: (status, filled) for oid, (status, filled) in state.items()}, trades


@pytest.mark.timeout(600)
def test_sigkill_the_matcher_again_and_again(
    start_test_process, kafka_topics, make_instrument, make_account
):
    from django.conf import settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}crash."
    env = {"KAFKA_TOPIC_PREFIX": prefix, "MATCHER_BATCH_SIZE": "200"}
    rng = random.Random(SEED)
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        kafka.ensure_topics()
        market = make_instrument(maker_fee_rate=D("0.001"), taker_fee_rate=D("0.002"))
        traders = [
            make_account(funds={market.quote: "10000000", market.base: "1000000"})
            for _ in range(10)
        ]
        start_test_process("crash-relay", *manage("run_outbox_relay"), env=env)
        matcher = start_test_process("crash-matcher-0", *manage("run_matcher"), env=env)
        kills = 0
        placing = threading.Event()
        placing.set()

        def killer() -> None:
            nonlocal matcher, kills
            killer_rng = random.Random(SEED + 1)
            while kills < KILLS:
                if killer_rng.random() < 0.2:
                    # Now and then in the middle of its start (rebuild, relay recovery).
                    time.sleep(killer_rng.uniform(0.5, 3.0))
                else:
                    # Mostly while it consumes: mid-batch, between commit and produce.
                    deadline = time.monotonic() + 30
                    while "matcher: partitions" not in matcher.output():
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.01)
                    time.sleep(killer_rng.uniform(0.05, 1.5))
                matcher.popen.kill()
                matcher.popen.wait()
                kills += 1
                matcher = start_test_process(
                    f"crash-matcher-{kills}", *manage("run_matcher"), env=env
                )

        thread = threading.Thread(target=killer)
        thread.start()
        placed: list[Order] = []
        started = time.monotonic()
        try:
            for number in range(ORDERS):
                account = rng.choice(traders)
                if placed and rng.random() < 0.15:
                    victim = rng.choice(placed)
                    with contextlib.suppress(TradingError):
                        order_cancel(account=victim.account, order_id=victim.pk)
                roll = rng.random()
                placed.append(
                    order_place(
                        account=account,
                        symbol=market.symbol,
                        client_order_id=f"c{number}",
                        side=rng.choice(["buy", "sell"]),
                        quantity=str(rng.randint(1, 20)),
                        price=f"{100 + rng.randint(-15, 15) / 100:.2f}",
                        time_in_force="ioc" if roll < 0.1 else "gtc",
                        post_only=0.1 <= roll < 0.15,
                    )
                )
                # Spread the stream over ~25 s so the kills land while it flows.
                time.sleep(max(0.0, started + 25 * (number + 1) / ORDERS - time.monotonic()))
        finally:
            placing.clear()
            thread.join()
        close_old_connections()
        assert kills >= KILLS

        def all_applied() -> bool:
            from django.db.models import F

            return not (
                Order.objects.filter(instrument=market, status="pending_new").exists()
                or Order.objects.filter(
                    instrument=market, applied_seq__lt=F("command_seq")
                ).exists()
            )

        wait_for(all_applied, timeout_s=120, what="the matcher to apply every command")

        orders = {order.pk: order for order in Order.objects.filter(instrument=market)}
        expected, expected_trades = replay(read_topic(kafka.ORDERS), orders)
        assert set(expected) == set(orders)
        for order_id, order in orders.items():
            assert (order.status, int(order.filled_quantity)) == expected[order_id], order_id
        stored = {
            (
                market.symbol,
                t.seq,
                t.maker_order_id,
                t.taker_order_id,
                int(t.price * 100),
                int(t.quantity),
            )
            for t in Trade.objects.filter(instrument=market)
        }
        assert stored == expected_trades
        assert len(stored) > 100

        # every trade in PostgreSQL is exactly once on the trades topic
        def trades_on_topic() -> Counter:
            return Counter(
                (kafka.decode(r.value).key, kafka.decode(r.value).seq)
                for r in read_topic(kafka.TRADES)
            )

        on_topic = wait_for(
            lambda: (c := trades_on_topic()) and sum(c.values()) >= len(stored) and c,
            timeout_s=30,
            what="every trade on the topic",
        )
        assert set(on_topic) == {(symbol, seq) for symbol, seq, *_ in stored}
        assert max(on_topic.values()) == 1
        assert ledger_verify() == []
