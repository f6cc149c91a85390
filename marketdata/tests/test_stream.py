"""The stream worker on the real Kafka and Redis: conflation, flushing, poison, reconnects.

Its flushes are read from Redis as every web process's hub reads them (`FlushReader`)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal

import pytest
from kafka import TopicPartition

from marketdata.stream import Conflator, StreamWorker
from testing.helpers import FlushReader, tick
from tredye import kafka

# The worker reads instruments, books and the platform's status from PostgreSQL.
pytestmark = pytest.mark.django_db(transaction=True)


def test_conflator_keeps_the_latest_message_per_channel_and_numbers_them():
    conflator = Conflator()
    for i in range(5):
        conflator.add("ticker.AAPL", ts=i, data={"last": str(i)})
    conflator.add("ticker.MSFT", ts=9, data={"last": "9"})
    drained = conflator.drain()
    assert drained["ticker.AAPL"] == {
        "ch": "ticker.AAPL",
        "seq": 5,
        "ts": 4,
        "type": "snapshot",
        "data": {"last": "4"},
    }
    assert drained["ticker.MSFT"]["seq"] == 1
    assert conflator.drain() == {}
    conflator.add("ticker.AAPL", ts=10, data={"last": "10"})
    assert conflator.drain()["ticker.AAPL"]["seq"] == 6


@pytest.fixture
def own_prefix(isolated_stream, kafka_topics):
    kafka.ensure_topics()
    return isolated_stream.KAFKA_TOPIC_PREFIX


class RunningWorker:
    def __init__(self, flush_interval_ms: int = 16) -> None:
        self.worker = StreamWorker(flush_interval_ms=flush_interval_ms, stale_after_s=5)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> StreamWorker:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.worker.connected:
            assert time.monotonic() < deadline, "stream worker never connected"
            time.sleep(0.05)
        time.sleep(0.2)  # let it finish seeking to the end of its partitions
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "stream worker did not stop"


@pytest.fixture
def flushes(own_prefix):
    reader = FlushReader()
    yield reader
    reader.close()


async def collect(reader: FlushReader, *, quiet_s: float) -> list[tuple[float, dict]]:
    """Tickers published until none comes for `quiet_s`; each with its arrival time."""
    received = await asyncio.to_thread(reader.collect, quiet_s=quiet_s)
    return [(at, m) for at, m in received if m["ch"].startswith("ticker.")]


async def test_many_ticks_give_at_most_one_message_per_flush_per_channel_latest_wins(flushes):
    interval_ms = 50
    producer = kafka.producer()
    with RunningWorker(flush_interval_ms=interval_ms) as worker:
        # when 600 ticks for two symbols arrive over about a second
        prices = {"AAPL": Decimal("100.00"), "MSFT": Decimal("400.00")}

        def produce():
            for i in range(1, 301):
                for symbol in prices:
                    prices[symbol] += Decimal("0.01")
                    producer.send(
                        kafka.topic(kafka.TICKS),
                        key=symbol.encode(),
                        value=tick(symbol, i, prices[symbol]),
                    )
                if i % 30 == 0:
                    producer.flush()
                    time.sleep(0.1)
            producer.flush()

        started = time.monotonic()
        await asyncio.to_thread(produce)
        received = await collect(flushes, quiet_s=1.0)
        consumed = worker.consumed
    elapsed = time.monotonic() - started
    # then every tick was consumed, yet each group got far fewer messages...
    assert consumed == 600
    for symbol in prices:
        arrivals = [(at, m) for at, m in received if m["ch"] == f"ticker.{symbol}"]
        assert arrivals, f"nothing arrived for {symbol}"
        # ... at most one per flush interval (plus one for the flush in progress at the start)
        assert len(arrivals) <= elapsed / (interval_ms / 1000) + 1
        assert len(arrivals) < 300
        seqs = [m["seq"] for _, m in arrivals]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        # and the last one carries the latest price
        assert arrivals[-1][1]["data"]["last"] == str(prices[symbol])
    producer.close()


def read_dead_letters(expected: int, timeout_s: float = 10.0) -> list:
    consumer = kafka.consumer(auto_offset_reset="earliest")
    topic = kafka.topic(kafka.DEAD_LETTER)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records += batch
    consumer.close()
    return records


async def test_a_malformed_record_is_dead_lettered_and_the_worker_goes_on(flushes):
    producer = kafka.producer()
    topic = kafka.topic(kafka.TICKS)
    with RunningWorker() as worker:
        bad = [
            b"{this is not json",
            json.dumps(
                {
                    "type": "tick",
                    "v": 1,
                    "key": "AAPL",
                    "seq": 1,
                    "ts": 1,
                    "data": {"symbol": "AAPL", "last": "NaN-ish"},
                }
            ).encode(),
        ]
        for value in bad:
            producer.send(topic, key=b"AAPL", value=value)
        producer.send(topic, key=b"AAPL", value=tick("AAPL", 2, Decimal("123.45")))
        producer.flush()
        received = await collect(flushes, quiet_s=1.5)
        dead_lettered = worker.dead_lettered
    assert [m["data"]["last"] for _, m in received] == ["123.45"]
    assert dead_lettered == 2
    records = read_dead_letters(2)
    assert sorted(r.value for r in records) == sorted(bad)
    headers = dict(records[0].headers)
    assert headers["worker"] == b"stream"
    assert headers["source"].startswith(topic.encode())
    assert headers["error"]
    producer.close()


async def test_the_worker_reconnects_after_the_broker_goes_away(flushes, settings, private_broker):
    settings.KAFKA_BOOTSTRAP_SERVERS = [private_broker.address]

    async def deliver(price: str, timeout_s: float) -> None:
        """Keep producing one price until it comes out of the worker."""
        producer = kafka.producer(max_block_ms=2000)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                await asyncio.to_thread(kafka.ensure_topics, [kafka.TICKS])
                producer.send(
                    kafka.topic(kafka.TICKS), key=b"AAPL", value=tick("AAPL", 1, Decimal(price))
                )
                await asyncio.to_thread(producer.flush, 5)
                for _, message in await collect(flushes, quiet_s=0.3):
                    if message["data"]["last"] == price:
                        return
            raise AssertionError(f"{price} never arrived")
        finally:
            producer.close(timeout=1)

    with RunningWorker() as worker:
        await deliver("10.00", 20)
        private_broker.kill()
        deadline = time.monotonic() + 20
        # connected goes false first; the status follows once the worker has reported it
        while worker.connected or worker.status.get("kafka") != "down":
            assert time.monotonic() < deadline, "worker never noticed the broker was gone"
            await asyncio.sleep(0.1)
        private_broker.start()  # a new, empty broker on the same address
        await deliver("11.00", 60)
        assert worker.connected


def test_the_worker_keeps_consuming_while_redis_is_away(own_prefix, settings):
    from tredye.devbroker import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = dead
    producer = kafka.producer()
    with RunningWorker() as worker:
        for seq in range(1, 51):
            producer.send(
                kafka.topic(kafka.TICKS),
                key=b"AAPL",
                value=tick("AAPL", seq, Decimal("100.00") + seq),
            )
        producer.flush()
        deadline = time.monotonic() + 20
        while worker.consumed < 50:
            assert time.monotonic() < deadline, f"consumed only {worker.consumed}"
            time.sleep(0.05)
        time.sleep(0.2)
        assert worker.redis_ok is False  # it knows, logged it once, and goes on
    producer.close()


@pytest.mark.django_db(transaction=True)
def test_the_stream_worker_outlives_terminated_database_connections(start_test_process):
    import uuid

    from django.test import override_settings

    from testing.helpers import manage, terminate_backends, wait_for
    from tredye import status

    # given the stream worker, which reads the platform's status from PostgreSQL every second
    name = f"stream-{uuid.uuid4().hex[:8]}"
    prefix = f"dbloss{uuid.uuid4().hex[:8]}."
    env = {"PGAPPNAME": name, "TEST_CONN_MAX_AGE": "600", "KAFKA_TOPIC_PREFIX": prefix}
    stream = start_test_process("stream", *manage("run_stream"), env=env)
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        wait_for(lambda: status.worker_reports().get("stream"), 30, "the stream worker's report")
        # when its connection is cut again and again
        for _ in range(3):
            wait_for(lambda: terminate_backends(name) >= 1, 10, "a connection to cut")
        cut_at = time.time()
        # then it is the same process, its loop still going (each cut above needed a new
        # connection: it reconnected every time)
        report = wait_for(
            lambda: (r := status.worker_reports().get("stream")) and r["at"] > cut_at + 1 and r,
            15,
            "a report after the cuts",
        )
        assert report["pid"] == stream.popen.pid
        assert stream.popen.poll() is None, stream.output()
