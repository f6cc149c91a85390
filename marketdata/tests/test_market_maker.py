"""The market maker: its quoting plan (pure), and the real bot on the real order path."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import override_settings
from kafka import KafkaProducer

from accounts.selectors import ledger_verify
from marketdata.feed import Quote as Tick
from marketdata.maker import BUY, SELL, MakerConfig, quotes_plan
from marketdata.services import TickPublisher
from testing.factories import make_price_model
from testing.helpers import manage, settled, wait_for
from trading.models import Order, Position
from trading.services import order_place
from tredye import kafka

D = Decimal
CONFIG = MakerConfig(levels=3, spread_bps=10, step_bps=5, level_lots=10, max_inventory_lots=200)


def plan(reference: str = "100.00", inventory: int = 0, config: MakerConfig = CONFIG, **kw):
    fields = {
        "tick_size": D("0.01"),
        "lot_size": D("1"),
        "min_quantity": D("0"),
        "max_quantity": None,
    } | kw
    return quotes_plan(reference=D(reference), inventory_lots=inventory, config=config, **fields)


def side(quotes, which):
    return [(q.price, q.quantity) for q in quotes if q.side == which]


def test_flat_maker_quotes_levels_on_both_sides_around_the_reference():
    quotes = plan()
    assert side(quotes, BUY) == [(D("99.90"), 10), (D("99.85"), 10), (D("99.80"), 10)]
    assert side(quotes, SELL) == [(D("100.10"), 10), (D("100.15"), 10), (D("100.20"), 10)]


def test_long_maker_bids_smaller_and_further_and_stops_at_its_limit():
    half = plan(inventory=100)
    assert [q for _, q in side(half, BUY)] == [5, 5, 5]
    assert side(half, BUY)[0][0] < D("99.90")  # pushed away
    assert side(half, SELL) == side(plan(), SELL)  # asks unchanged
    # the bids never take it past the limit
    near = plan(inventory=195, config=CONFIG)
    assert sum(q for _, q in side(near, BUY)) <= 5
    assert sum(q for _, q in side(plan(inventory=185), BUY)) <= 15
    assert side(plan(inventory=200), BUY) == []
    assert side(plan(inventory=250), BUY) == []
    assert len(side(plan(inventory=250), SELL)) == 3


def test_short_maker_mirrors_it():
    assert side(plan(inventory=-200), SELL) == []
    assert [q for _, q in side(plan(inventory=-100), SELL)] == [5, 5, 5]
    assert len(side(plan(inventory=-200), BUY)) == 3


def test_levels_stay_a_tick_apart_and_on_the_grid_when_bps_are_finer_than_a_tick():
    quotes = plan("1.00")
    assert side(quotes, BUY) == [(D("0.99"), 10), (D("0.98"), 10), (D("0.97"), 10)]
    assert side(quotes, SELL) == [(D("1.01"), 10), (D("1.02"), 10), (D("1.03"), 10)]


def test_sizes_respect_the_instrument_limits():
    assert {q for _, q in side(plan(min_quantity=D("20")), BUY)} == {20}
    assert {q for _, q in side(plan(max_quantity=D("4")), SELL)} == {4}
    assert plan("0") == []
    assert plan("-5") == []


# ---------------------------------------------------------------------------------------------
# The real bot: ticks on Kafka, relay, matcher, maker as child processes
# ---------------------------------------------------------------------------------------------


def maker_open(account, market, status=None):
    orders = Order.objects.filter(
        account=account, instrument=market, status__in=Order.OPEN_STATUSES
    )
    return list(orders if status is None else orders.filter(status=status))


@pytest.mark.django_db(transaction=True)
def test_the_maker_quotes_a_lone_trader_fills_and_inventory_stays_in_limits(
    order_path, start_test_process, make_instrument, make_account
):
    # given: an instrument with a reference price, a funded maker, ticks on Kafka
    market = make_instrument()
    make_price_model(market, price="100.00", volatility="0.2", spread_bps=2, typical_size="10")
    bot = make_account(
        f"mm-{uuid.uuid4().hex[:8]}", funds={market.quote: "1000000", market.base: "1000"}
    )
    user = bot.user
    limits = {
        "MARKET_MAKER_LEVEL_LOTS": "10",
        "MARKET_MAKER_MAX_INVENTORY_LOTS": "20",
        "MARKET_MAKER_REFRESH_MS": "200",
    }
    maker = start_test_process(
        "maker",
        *manage("run_market_maker", "--username", user.username, "--symbols", market.symbol),
        env={"KAFKA_TOPIC_PREFIX": order_path, "LOG_LEVEL": "INFO"} | limits,
    )
    with override_settings(KAFKA_TOPIC_PREFIX=order_path):
        publisher = TickPublisher()
        producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
    open_price = D("100.00")

    def tick(last: D) -> None:
        spread = D("0.01")
        publisher.publish(
            Tick(market.symbol, last - spread, last + spread, last, D(10), D(10), open_price)
        )
        publisher.producer.flush()

    def quoted_around(last: D):
        tick(last)
        live = maker_open(bot, market, Order.Status.NEW)
        bids = [o.price for o in live if o.side == BUY]
        asks = [o.price for o in live if o.side == SELL]
        if bids and asks and max(bids) < last < min(asks):
            return live
        return None

    try:
        # then: 20 lots of room to its limit each way: 2 levels of 10 on each side
        def flat_quotes():
            live = quoted_around(D("100.00"))
            return live if live and len(live) == 4 else None

        live = wait_for(flat_quotes, 40, "the maker's quotes")
        assert sorted(o.price for o in live) == [
            D("99.85"),
            D("99.90"),
            D("100.10"),
            D("100.15"),
        ]
        assert {o.quantity for o in live} == {D(10)}

        # when: a lone trader buys at market
        buyer = make_account(funds={market.quote: "10000"})
        buy = order_place(
            account=buyer,
            symbol=market.symbol,
            client_order_id="lone-buy",
            side="buy",
            type="market",
            quantity="5",
        )
        # then: it fills against the maker's best ask
        buy = settled(buy)
        assert buy.status == Order.Status.FILLED
        assert buy.average_price == D("100.10")

        # when: bad ticks arrive, then the price moves
        topic = kafka.topic(kafka.TICKS)
        for value in (b"not json", b'{"type":"tick"}', None):
            producer.send(topic, key=market.symbol.encode(), value=value)
        producer.send(
            topic,
            key=market.symbol.encode(),
            value=kafka.encode(
                type="tick",
                key=market.symbol,
                seq=1,
                data={f: "-1" for f in ("bid", "ask", "last", "bid_size", "ask_size", "open")}
                | {"symbol": market.symbol, "change_pct": "0"},
            ),
        )
        producer.flush()
        # then: it is still running and follows the price up
        wait_for(lambda: quoted_around(D("101.00")), 40, "the maker to requote at 101")
        assert maker.popen.poll() is None

        # when: a trader sells it 25 lots: from 5 short to 20 long, its inventory limit
        # (being short 5, it bids 10 + 10 + 5)
        wait_for(
            lambda: (
                sum(o.quantity for o in maker_open(bot, market, Order.Status.NEW) if o.side == BUY)
                == 25
            ),
            20,
            "the maker to bid 25",
        )
        seller = make_account(funds={market.base: "100"})
        sell = order_place(
            account=seller,
            symbol=market.symbol,
            client_order_id="big-sell",
            side="sell",
            type="market",
            quantity="25",
        )
        assert settled(sell).status == Order.Status.FILLED
        assert Position.objects.get(account=bot, instrument=market).quantity == D(20)

        # then: it stops bidding, and still offers (more room on that side now)
        def bids_gone():
            tick(D("101.00"))
            live = maker_open(bot, market)
            if any(o.status == Order.Status.PENDING_NEW for o in live):
                return None
            sides = [o.side for o in live]
            return live if BUY not in sides and sides.count(SELL) == 3 else None

        wait_for(bids_gone, 40, "the maker to stop bidding at its inventory limit")
        assert maker.popen.poll() is None, maker.output()
    except AssertionError:
        print(maker.output())  # noqa: T201 - shown with the failure
        raise
    finally:
        publisher.close()
        producer.close()
        maker.stop()
    # a clean stop withdraws its quotes; the ledger still balances
    wait_for(lambda: not maker_open(bot, market), 20, "the maker's quotes to be canceled")
    assert ledger_verify() == []
    assert "dead-lettering" in maker.log_path.read_text()
