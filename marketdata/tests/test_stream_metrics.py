"""What the WebSocket consumer and the stream worker count into /metrics, read by scraping it.

Each test compares two scrapes of this process's figures (`tredye.metrics`, multiprocess mode:
the view merges this process's files too), so what other tests counted before cancels out.
"""

from __future__ import annotations

import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from marketdata.stream import Conflator, StreamWorker
from testing.helpers import publish_flush
from tredye import kafka
from tredye.asgi import application
from tredye.kafka import Envelope

ORIGIN = (b"origin", b"http://127.0.0.1:8000")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape() -> Samples:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


async def ascrape() -> Samples:
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


SOCKETS = "tredye_ws_connected_sockets"
FRAMES = "tredye_ws_frames_sent_total"
MESSAGES = "tredye_ws_messages_sent_total"
LATENCY_COUNT = "tredye_ws_message_latency_seconds_count"
LATENCY_SUM = "tredye_ws_message_latency_seconds_sum"
DROPS = "tredye_ws_conflated_drops_total"


async def open_socket(**scope: object) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=[ORIGIN])
    communicator.scope.update(scope)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_a_socket_counts_itself_its_frames_messages_and_their_latency(
    isolated_stream, make_instrument
):
    isolated_stream.WS_HEARTBEAT_INTERVAL_S = 30
    await database_sync_to_async(make_instrument)("AAPL", price="200.00")
    before = await ascrape()

    # when a socket connects, subscribes and receives a ticker made 30 ms ago
    communicator = await open_socket()
    assert (await communicator.receive_json_from())["op"] == "welcome"
    assert (await communicator.receive_json_from())["op"] == "status"
    await communicator.send_json_to({"op": "subscribe", "channels": ["ticker.AAPL"]})
    assert (await communicator.receive_json_from())["op"] == "subscribed"
    channel = "ticker.AAPL"
    message = {"ch": channel, "seq": 1, "ts": time.time_ns() // 1_000_000 - 30, "data": {}}
    await publish_flush({channel: json.dumps(message)})
    assert (await communicator.receive_json_from()) == {"batch": [message]}
    during = await ascrape()

    # then the scrape shows it open, its four frames and their messages by kind...
    assert delta(before, during, SOCKETS) == 1
    assert delta(before, during, FRAMES) == 4  # welcome, status, subscribed, batch
    for kind in ("welcome", "status", "subscribed", "ticker"):
        assert delta(before, during, MESSAGES, kind=kind) == 1, kind
    # ... and the ticker's age when sent (status messages carry no event time)
    assert delta(before, during, LATENCY_COUNT, kind="ticker") == 1
    assert 0.03 <= delta(before, during, LATENCY_SUM, kind="ticker") < 5
    assert delta(before, during, LATENCY_COUNT, kind="status") == 0

    # and once it is closed, it no longer counts as open
    await communicator.disconnect()
    after = await ascrape()
    assert delta(before, after, SOCKETS) == 0
    assert delta(before, after, FRAMES) == 4


@pytest.mark.django_db(transaction=True)
async def test_a_socket_refused_past_the_limit_counts_while_open_and_uncounts_once(
    isolated_stream,
):
    isolated_stream.WS_HEARTBEAT_INTERVAL_S = 30
    isolated_stream.WS_MAX_SOCKETS_PER_IP = 1
    client = {"client": ("127.0.0.1", 40000)}
    before = await ascrape()
    first = await open_socket(**client)
    refused = await open_socket(**client)
    assert (await refused.receive_json_from())["code"] == "too_many_sockets"
    assert (await refused.receive_output())["code"] == 4429
    during = await ascrape()
    assert delta(before, during, SOCKETS) == 2  # accepted, then refused: both were open
    assert delta(before, during, MESSAGES, kind="error") == 1
    await refused.disconnect()
    await first.disconnect()
    after = await ascrape()
    assert delta(before, after, SOCKETS) == 0


def test_conflation_counts_each_message_replaced_before_it_was_sent():
    # A channel kind of its own: a stream worker of another test, counting into the same
    # figures, never conflates it.
    before = scrape()
    conflator = Conflator()
    for i in range(5):
        conflator.add("metricstest.AAPL", ts=i, data={"last": str(i)})
    conflator.add("metricstest.MSFT", ts=9, data={"last": "9"})
    assert delta(before, scrape(), DROPS, kind="metricstest") == 4  # AAPL 1..4 never left

    # a flush that failed puts back only what nothing newer replaced meanwhile
    drained = conflator.drain()
    conflator.add("metricstest.AAPL", ts=10, data={"last": "10"})
    conflator.restore(drained)
    assert delta(before, scrape(), DROPS, kind="metricstest") == 5
    assert conflator.drain()["metricstest.MSFT"]["ts"] == 9


class NoBroadcast:
    def publish(self, messages: dict, snapshots: dict) -> None:
        pass

    def publish_status(self, status: dict, *, changed: bool) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_stream_workers_report_sets_its_lag_and_last_event_age(isolated_stream):
    worker = StreamWorker(flush_interval_ms=16, stale_after_s=5, broadcaster=NoBroadcast())  # type: ignore[arg-type]
    # A day old: the gauge is the largest over the live processes, and a stream worker of
    # another test may report its own (younger) age at the same time.
    made = time.time_ns() // 1_000_000 - 86_400_000
    tick = {"symbol": "AAPL", "last": "1"}

    def record(ts: int) -> tuple[str, Envelope, dict]:
        return kafka.TICKS, Envelope("tick", 1, "AAPL", 1, ts, tick), tick

    worker.handle([record(made), record(made - 500_000)])
    worker.lag = 10_000_007  # above any other live worker's (the gauge is their largest)
    worker._publish_report(time.monotonic())  # noqa: SLF001 - what its loop calls each second
    samples = scrape()
    assert value(samples, "tredye_stream_lag_records", topic=kafka.TICKS) == 10_000_007
    age = value(samples, "tredye_stream_last_event_age_seconds", topic=kafka.TICKS)
    assert 86_400 <= age < 86_410  # the newest tick's age, not the older one's
