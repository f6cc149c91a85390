"""The reference feed: a reproducible simulation, a strict replay reader, and ticks on Kafka."""

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata.feed import FeedError, Quote, SimulatedInstrument, Simulator, read_replay
from marketdata.models import PriceModel
from marketdata.services import TickPublisher
from tredye import kafka


def simulator(seed: int) -> Simulator:
    states = [
        SimulatedInstrument(
            symbol=s,
            tick_size=Decimal("0.01"),
            lot_size=Decimal("1"),
            annual_volatility=0.4,
            spread_bps=4,
            typical_size=Decimal("100"),
            price_ticks=20000,
            open_ticks=20000,
        )
        for s in ("AAPL", "MSFT")
    ]
    return Simulator(states, seed=seed, time_scale=600)


def run(seed: int, steps: int) -> list:
    sim = simulator(seed)
    return [sim.step(0.05) for _ in range(steps)]


def test_same_seed_gives_same_ticks_and_other_seed_differs():
    first = run(7, 200)
    again = run(7, 200)
    other = run(8, 200)
    assert first == again
    assert first != other


def test_simulated_prices_sit_on_the_tick_with_bid_below_ask():
    quotes = run(1, 500)
    for quote in quotes:
        assert quote.bid < quote.last < quote.ask
        for price in (quote.bid, quote.ask, quote.last):
            assert price == price.quantize(Decimal("0.01"))
        assert quote.bid_size > 0
        assert quote.bid_size == quote.bid_size.to_integral_value()
    assert len({q.last for q in quotes if q.symbol == "AAPL"}) > 10  # the price moves


def write_csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ticks.csv"
    path.write_text("ts,symbol,bid,ask,last,bid_size,ask_size\n" + body)
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1000,ZZZZ,1,2,1.5,1,1", "unknown or inactive symbol 'ZZZZ'"),
        ("1000,AAPL,abc,2,1.5,1,1", "bid is not a number"),
        ("1000,AAPL,3,2,2.5,1,1", "bid 3 above ask 2"),
        ("1000,AAPL,1,2,1.5,-1,1", "bid_size must be a positive number"),
        ("2026-01-02T10:00:00,AAPL,1,2,1.5,1,1", "has no time zone"),
        ("yesterday,AAPL,1,2,1.5,1,1", "neither epoch ms nor ISO 8601"),
    ],
)
def test_replay_rejects_a_bad_row_naming_its_line(tmp_path, row, message):
    path = write_csv(tmp_path, "1000,AAPL,1,2,1.5,1,1\n" + row + "\n")
    with pytest.raises(FeedError, match=":3: .*" + message.replace("(", r"\(")):
        read_replay(path, known_symbols={"AAPL"})


def test_replay_rejects_missing_columns_and_missing_files(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("ts,symbol,bid\n1,AAPL,1\n")
    with pytest.raises(FeedError, match="missing columns"):
        read_replay(path, known_symbols={"AAPL"})
    with pytest.raises(FeedError, match="cannot open"):
        read_replay(tmp_path / "nope.csv", known_symbols={"AAPL"})


def read_topic(name: str, expected: int, timeout_s: float = 10.0) -> list:
    """Read `expected` records from the start of a topic with a real consumer."""
    consumer = kafka.consumer(auto_offset_reset="earliest")
    try:
        topic = kafka.topic(name)
        from kafka import TopicPartition

        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
        return records
    finally:
        consumer.close()


@pytest.fixture
def fresh_ticks_topic(kafka_topics):
    """A ticks topic of this test's own, so records of other tests don't mix in."""
    from django.conf import settings

    prefix = f"{settings.KAFKA_TOPIC_PREFIX}feed{time.monotonic_ns()}."
    original = settings.KAFKA_TOPIC_PREFIX
    settings.KAFKA_TOPIC_PREFIX = prefix
    kafka.ensure_topics([kafka.TICKS])
    yield
    settings.KAFKA_TOPIC_PREFIX = original


@pytest.mark.django_db
def test_simulated_feed_reaches_kafka_in_the_envelope(make_instrument, fresh_ticks_topic):
    # given two active instruments and a closed one
    make_instrument("AAPL", price="190.00")
    make_instrument("MSFT", price="410.00")
    make_instrument("OLD", price="5.00", status="closed")
    # when the feed runs for 60 ticks
    call_command("run_feed", "--rate", "500", "--seed", "3", "--count", "60")
    # then a real consumer reads them back, keyed by symbol, seq +1 per key
    records = read_topic(kafka.TICKS, 60)
    assert len(records) == 60
    envelopes = [json.loads(r.value) for r in records]
    assert {e["key"] for e in envelopes} == {"AAPL", "MSFT"}
    for record, envelope in zip(records, envelopes, strict=True):
        assert record.key.decode() == envelope["key"] == envelope["data"]["symbol"]
        assert set(envelope) == {"type", "v", "key", "seq", "ts", "data"}
        assert envelope["type"] == "tick"
        assert envelope["v"] == 1
        assert abs(envelope["ts"] - time.time() * 1000) < 60_000
        Decimal(envelope["data"]["last"])  # prices are decimal strings, never floats
        assert isinstance(envelope["data"]["last"], str)
    for symbol in ("AAPL", "MSFT"):
        seqs = sorted(e["seq"] for e in envelopes if e["key"] == symbol)
        assert seqs == list(range(1, len(seqs) + 1))
    # and the feed remembers where prices stand, for its next start
    assert PriceModel.objects.get(instrument__symbol="AAPL").last_price is not None


@pytest.mark.django_db
def test_replay_feed_sends_the_recorded_prices_in_time_order(
    make_instrument, fresh_ticks_topic, tmp_path
):
    make_instrument("AAPL", price="200.00")
    path = write_csv(
        tmp_path,
        "\n".join(
            [
                "1700000000300,AAPL,100.02,100.04,100.03,5,6",
                "1700000000100,AAPL,100.00,100.02,100.01,1,2",
                "2023-11-14T22:13:20.200+00:00,AAPL,100.01,100.03,100.02,3,4",
            ]
        )
        + "\n",
    )
    started = time.monotonic()
    call_command("run_feed", "--replay", str(path), "--speed", "2")
    elapsed = time.monotonic() - started
    records = read_topic(kafka.TICKS, 3)
    lasts = [json.loads(r.value)["data"]["last"] for r in records]
    assert lasts == ["100.01", "100.02", "100.03"]
    assert elapsed >= 0.1  # 200 ms recorded, played at 2x


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be a positive"),
        (["--replay", "/nonexistent.csv"], "cannot open"),
        (["--symbols", "NOPE"], "no active instrument with a price model"),
        (["--count", "0"], "--count must be at least 1"),
    ],
)
def test_bad_arguments_give_a_clear_error_and_send_nothing(
    make_instrument, fresh_ticks_topic, args, message
):
    make_instrument("AAPL", price="200.00")
    with pytest.raises(CommandError, match=message):
        call_command("run_feed", *args)
    assert read_topic(kafka.TICKS, 1, timeout_s=1.0) == []


@pytest.mark.django_db
def test_a_restarted_feed_resumes_prices_and_opens_a_new_session_each_day(make_instrument):
    from datetime import timedelta

    from django.utils import timezone

    from marketdata.selectors import simulation_states

    make_instrument("AAPL", price="200.00")
    models = PriceModel.objects.filter(instrument__symbol="AAPL")
    models.update(last_price=Decimal("210.00"), session_open=Decimal("205.00"))
    (today,) = simulation_states()
    assert (today.price(today.price_ticks), today.price(today.open_ticks)) == (
        Decimal("210.00"),
        Decimal("205.00"),
    )
    models.update(updated_at=timezone.now() - timedelta(days=1))
    (next_day,) = simulation_states()
    assert next_day.price(next_day.open_ticks) == Decimal("210.00")


@pytest.mark.django_db
def test_saving_prices_marks_the_day_they_belong_to(make_instrument):
    from datetime import timedelta

    from django.utils import timezone

    from marketdata.services import price_models_save

    # given prices saved yesterday
    make_instrument("AAPL", price="200.00")
    models = PriceModel.objects.filter(instrument__symbol="AAPL")
    models.update(updated_at=timezone.now() - timedelta(days=1))
    # when the feed saves today's
    price_models_save(prices={"AAPL": (Decimal("201.00"), Decimal("200.50"))})
    # then they are today's: a restart today keeps today's session open
    assert models.get().updated_at.date() == timezone.now().date()


def test_tick_numbers_are_never_in_exponent_form():
    from marketdata.feed import Quote

    quote = Quote(
        symbol="AAPL",
        bid=Decimal("229.86"),
        ask=Decimal("229.88"),
        last=Decimal("229.87"),
        bid_size=Decimal("300").normalize(),  # Decimal('3E+2')
        ask_size=Decimal("0.00001"),
        open=Decimal("229.00"),
    )
    data = quote.as_data()
    assert (data["bid_size"], data["ask_size"]) == ("300", "0.00001")
    assert all("E" not in value for value in data.values())


def test_the_feed_delivers_again_when_the_broker_comes_back_empty(private_broker, settings):
    """A broker that came back empty leaves a kafka-python idempotent producer failing every
    batch while `send` still accepts ticks: the publisher must see the failed deliveries,
    count them as dropped, and build a new producer, or the feed goes silent for good."""
    from testing.helpers import read_topic

    settings.KAFKA_BOOTSTRAP_SERVERS = [private_broker.address]
    settings.KAFKA_TOPIC_PREFIX = f"feedroll{time.monotonic_ns()}."
    publisher = TickPublisher()
    quote = Quote("ROLL", *(Decimal(v) for v in ("1", "2", "1.5", "1", "1", "1")))

    def publish_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            publisher.publish(quote)
            time.sleep(0.02)

    try:
        publish_for(1.0)
        assert len(read_topic(kafka.TICKS)) > 0
        private_broker.kill()
        private_broker.start()
        publish_for(5.0)
        if publisher.producer is not None:
            publisher.producer.flush(timeout=5)
        delivered = read_topic(kafka.TICKS)
    finally:
        publisher.close()
    # the new, empty topic holds the ticks published after the first seconds of recovery
    assert len(delivered) > 50
    seqs = [kafka.decode(record.value).seq for record in delivered]
    assert seqs == sorted(seqs)
    assert publisher.dropped > 0
