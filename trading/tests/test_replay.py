"""Replay (`manage.py replay`): a few thousand orders through the real relay and matcher, then
every book, order, trade, position and balance rebuilt from the recorded commands equals
PostgreSQL's, from the database's record and from the topic; a row altered afterwards shows in
the diff and the command exits non-zero."""

from __future__ import annotations

import random
import subprocess
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from testing.helpers import manage, place, wait_for
from trading.exceptions import TradingError
from trading.matching.commands import PLACE
from trading.models import Order, Outbox, Position, Trade
from trading.reference import instrument_rules_change
from trading.replay import DATABASE, TOPIC, ReplayError, replay_run
from trading.services import day_orders_expire, order_cancel, order_replace
from tredye import kafka

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)

OPEN = (Order.Status.NEW, Order.Status.PARTIALLY_FILLED)


def _all_applied() -> bool:
    return not Outbox.objects.filter(topic=kafka.ORDERS, applied_at__isnull=True).exists()


def _orders(rng: random.Random, markets: list, accounts: list, count: int) -> int:
    """Place `count` random orders around 100 (many crossing): limit GTC mostly, and IOC, DAY,
    post-only, market and stop-limit ones. Returns how many the service accepted."""
    placed = 0
    for _ in range(count):
        market = rng.choice(markets)
        tick, lot = market.tick_size, market.lot_size
        side = rng.choice(("buy", "sell"))
        # Buyers bid up to 20 ticks over 100, sellers ask down to 20 under: many cross.
        offset = rng.randint(-40, 20) if side == "buy" else rng.randint(-20, 40)
        price = D(100) + offset * tick
        fields: dict[str, object] = {"price": price}
        roll = rng.random()
        if roll < 0.08:
            fields["time_in_force"] = "ioc"
        elif roll < 0.14:
            fields["time_in_force"] = "day"
        elif roll < 0.18:
            fields["post_only"] = True
        elif roll < 0.23:
            fields = {"type": "market"}
        elif roll < 0.26:
            stop = D(100) + (rng.randint(2, 10) if side == "buy" else -rng.randint(2, 10)) * tick
            fields |= {"type": "stop_limit", "stop_price": stop}
        try:
            place(rng.choice(accounts), market, side, str(rng.randint(1, 8) * lot), **fields)
        except TradingError:
            continue  # e.g. a market order before the first trade: no reference price
        placed += 1
    return placed


def _amend(rng: random.Random, markets: list) -> tuple[int, int]:
    """Cancel (whole or in part) and replace some open orders; returns (cancels, replaces)."""
    cancels = replaces = 0
    open_orders = list(
        Order.objects.filter(status__in=OPEN, instrument__in=markets, type=Order.Type.LIMIT)
        .select_related("account", "instrument")
        .order_by("pk")
    )
    rng.shuffle(open_orders)
    for order in open_orders[:450]:
        lot, tick = order.instrument.lot_size, order.instrument.tick_size
        try:
            if rng.random() < 0.55:
                partial = order.quantity - order.filled_quantity > lot and rng.random() < 0.4
                order_cancel(
                    account=order.account, order_id=order.pk, quantity=lot if partial else None
                )
                cancels += 1
            else:
                order_replace(
                    account=order.account,
                    order_id=order.pk,
                    quantity=order.filled_quantity + rng.randint(1, 9) * lot,
                    price=order.price + rng.randint(-3, 3) * tick,
                )
                replaces += 1
        except TradingError:
            continue  # filled meanwhile, or the replace is refused
    return cancels, replaces


def test_replay_of_thousands_of_orders_equals_postgresql_and_shows_an_altered_row(
    order_path, process_env, make_instrument, make_asset, make_account
):
    # given: two markets (one with fractional lots) and six funded traders
    first = make_instrument()
    second = make_instrument(tick="0.05", lot="0.1", base=make_asset(f"R{uuid.uuid4().hex[:5]}", 2))
    markets = [first, second]
    accounts = [
        make_account(funds={first.quote: "10000000", first.base: "100000", second.base: "100000"})
        for _ in range(6)
    ]
    rng = random.Random(14)

    # when: a history of thousands of orders runs through the relay and the matcher, with
    # cancels, partial cancels and replaces of resting orders, the end of a trading day on
    # one market and a fee change on the other
    placed = _orders(rng, markets, accounts, 1700)
    wait_for(_all_applied, 90, "the first orders to be applied")
    cancels, replaces = _amend(rng, markets)
    day_orders_expire(symbols=[first.symbol])
    instrument_rules_change(symbol=second.symbol, maker_fee_rate="0.0005", changed_by="test")
    placed += _orders(rng, markets, accounts, 1300)
    cancels_2, replaces_2 = _amend(rng, markets)
    wait_for(_all_applied, 90, "every command to be applied")

    # the history is what the test says it is
    statuses = set(Order.objects.values_list("status", flat=True))
    assert placed > 2500
    assert cancels + cancels_2 > 200
    assert replaces + replaces_2 > 150
    assert {"filled", "partially_filled", "canceled", "expired", "rejected", "new"} <= statuses
    assert Order.objects.filter(type="market", filled_quantity__gt=0).exists()
    assert Order.objects.filter(type="stop_limit", triggered_at__isnull=False).exists()
    assert Order.objects.filter(time_in_force="ioc", status="canceled").exists()
    assert Order.objects.filter(time_in_force="day", status="expired").exists()
    assert Order.objects.filter(status="partially_filled", command_seq__gt=0).exists()
    assert Trade.objects.filter(instrument=first).count() > 300
    assert Trade.objects.filter(instrument=second).count() > 300
    assert not Outbox.objects.filter(
        topic=kafka.ORDERS, applied_at__isnull=False, applied_rank__isnull=True
    ).exists()

    # then: the replay from PostgreSQL's record of commands reproduces every table
    from_database = replay_run(source=DATABASE)
    assert from_database.lines()[-1] == "PostgreSQL is what the commands imply.", "\n".join(
        from_database.lines()
    )
    assert from_database.source == DATABASE
    compared = {table.name: table.compared for table in from_database.tables}
    assert compared["orders"] == Order.objects.count()
    assert compared["trades"] == Trade.objects.count()
    assert compared["open orders"] == Order.objects.filter(status__in=OPEN).count() > 0
    assert from_database.applied > placed
    assert from_database.not_replayable == {}

    # and so does the replay from the topic, which still holds every command
    from_topic = replay_run()
    assert (from_topic.source, from_topic.is_clean) == (TOPIC, True), "\n".join(from_topic.lines())

    # when: a trade's quantity and a position's realised P&L are altered in the database
    trade = Trade.objects.filter(instrument=second).order_by("seq")[5]
    Trade.objects.filter(pk=trade.pk).update(quantity=F("quantity") + second.lot_size)
    position = Position.objects.filter(instrument=first).order_by("pk").first()
    assert position is not None
    Position.objects.filter(pk=position.pk).update(realized_pnl=F("realized_pnl") + D("0.01"))

    # then: the command shows both, and nothing else, and exits non-zero
    done = subprocess.run(
        manage("replay", "--source", "database"),
        env=process_env | {"KAFKA_TOPIC_PREFIX": order_path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    out = done.stdout
    altered = trade.quantity + second.lot_size
    assert (
        f"{second.symbol} trade {trade.seq}: quantity PostgreSQL {altered.normalize():f} "
        f"replay {trade.quantity.normalize():f}"
    ) in out, out
    pnl = position.realized_pnl
    assert (
        f"account {position.account_id} {first.symbol}: realized_pnl PostgreSQL "
        f"{(pnl + D('0.01')).normalize():f} replay {pnl.normalize():f}"
    ) in out, out
    assert out.rstrip().endswith(
        "PostgreSQL differs from what the commands imply: 2 differences (trades 1, positions 1)."
    ), out
    assert "applied" in done.stderr  # the progress


def test_bad_arguments_are_refused_and_a_topic_without_the_commands_is_not_used(
    make_queued_command,
):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("replay", "--source", "nowhere")
    with pytest.raises(CommandError, match="--limit must be 0 or more"):
        call_command("replay", "--limit", "-1")
    with pytest.raises(ReplayError, match="source must be one of"):
        replay_run(source="nowhere")

    # a command PostgreSQL says was applied, which this run's topic never held
    command = make_queued_command()
    Outbox.objects.filter(pk=command.pk).update(applied_at=command.created_at, applied_rank=1)
    with pytest.raises(CommandError, match="cannot replay from the topic"):
        call_command("replay", "--source", "topic")
    report = replay_run()
    assert report.source == DATABASE
    assert "topic" in report.source_reason


def _filled(account: object, market: object, side: str) -> Order:
    return Order.objects.create(
        account=account,
        instrument=market,
        client_order_id=uuid.uuid4().hex,
        side=side,
        type=Order.Type.LIMIT,
        time_in_force=Order.TimeInForce.GTC,
        quantity=D("1"),
        price=D("10"),
        filled_quantity=D("1"),
        status=Order.Status.FILLED,
        maker_fee_rate=D(0),
        taker_fee_rate=D(0),
    )


def test_orders_placed_before_place_commands_carried_their_terms_are_not_differences(
    make_instrument, make_account
):
    # given: a market whose orders and trade are in PostgreSQL without a replayable command
    market = make_instrument()
    buyer, seller = make_account(), make_account()
    maker, taker = _filled(seller, market, "sell"), _filled(buyer, market, "buy")
    Trade.objects.create(
        instrument=market,
        seq=1,
        maker_order=maker,
        taker_order=taker,
        buyer=buyer,
        seller=seller,
        price=D("10"),
        quantity=D("1"),
        quote_amount=D("10"),
        aggressor_side="buy",
        settlement_date=timezone.now().date(),
    )
    orders = (maker.pk, taker.pk)
    unexplained = replay_run(source=DATABASE)
    assert {d.line() for t in unexplained.tables for d in t.differences} >= {
        f"order {orders[0]}: only in PostgreSQL",
        f"{market.symbol} trade 1: only in PostgreSQL",
    }

    # when: their place commands are the old kind, which name the order only
    Outbox.objects.bulk_create(
        Outbox(
            topic=kafka.ORDERS,
            key=market.symbol,
            type=PLACE,
            seq=0,
            ts=0,
            data={"order_id": order_id},
            applied_at=timezone.now(),
            applied_rank=1,
        )
        for order_id in orders
    )
    report = replay_run(source=DATABASE)

    # then: they are reported as not replayable, and their book is left out, not a difference
    assert report.not_replayable == dict.fromkeys(orders, market.symbol)
    assert report.is_clean, "\n".join(report.lines())
    assert "2 orders are not replayable" in "\n".join(report.lines())
