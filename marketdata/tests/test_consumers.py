"""`/ws/stream/` through WebsocketCommunicator, with flushes published on the real Redis."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from marketdata.channels import STATUS_KEY
from testing.helpers import publish_flush
from tredye.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture
def isolated(isolated_stream):
    isolated_stream.WS_HEARTBEAT_INTERVAL_S = 30
    return isolated_stream


@pytest.fixture
def instruments(make_instrument):
    async def make():
        await database_sync_to_async(make_instrument)("AAPL", price="200.00")
        await database_sync_to_async(make_instrument)("BTC-USD", price="97000.00")

    return make


async def connect(headers=(ORIGIN,)) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=list(headers))
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from()
    assert welcome["op"] == "welcome"
    status = await communicator.receive_json_from()
    assert status["op"] == "status"
    return communicator


async def send_tick(symbol: str, seq: int, last: str) -> None:
    channel = f"ticker.{symbol}"
    message = {"ch": channel, "seq": seq, "ts": 1, "data": {"symbol": symbol, "last": last}}
    await publish_flush({channel: message})


async def receive_batches(communicator, quiet_s: float = 0.5) -> list[dict]:
    frames = []
    # receive_nothing, unlike a receive that times out, leaves the application running
    while not await communicator.receive_nothing(timeout=quiet_s):
        frames.append(await communicator.receive_json_from())
    return frames


async def test_subscribe_then_updates_arrive_in_batches_in_order_latest_last(isolated, instruments):
    await instruments()
    communicator = await connect()
    await communicator.send_json_to({"op": "subscribe", "channels": ["ticker.AAPL"]})
    assert await communicator.receive_json_from() == {
        "op": "subscribed",
        "channels": ["ticker.AAPL"],
    }
    for seq in range(1, 51):
        await send_tick("AAPL", seq, f"100.{seq:02d}")
    frames = await receive_batches(communicator)
    assert frames
    assert all(set(frame) == {"batch"} for frame in frames)
    messages = [m for frame in frames for m in frame["batch"]]
    assert len(frames) <= 50  # never more than one frame per flush (flushes that wait merge)
    assert all(len(frame["batch"]) == 1 for frame in frames)  # latest wins within a frame
    assert messages[-1]["data"]["last"] == "100.50"
    assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
    await communicator.disconnect()


async def test_subscribe_starts_with_the_last_known_snapshot(isolated, instruments):
    import redis.asyncio as aioredis

    from marketdata.selectors import snapshot_key

    await instruments()
    client = aioredis.from_url(isolated.REDIS_URL)
    snapshot = {"ch": "ticker.BTC-USD", "seq": 9, "ts": 5, "data": {"last": "97001.00"}}
    await client.hset(snapshot_key(), "ticker.BTC-USD", json.dumps(snapshot))
    communicator = await connect()
    await communicator.send_json_to({"op": "subscribe", "channels": ["ticker.BTC-USD"]})
    await communicator.receive_json_from()  # subscribed
    assert await communicator.receive_json_from() == {"batch": [snapshot]}
    await communicator.disconnect()
    await client.delete(snapshot_key())
    await client.aclose()


async def test_unsubscribe_stops_updates(isolated, instruments):
    await instruments()
    communicator = await connect()
    await communicator.send_json_to({"op": "subscribe", "channels": ["ticker.AAPL"]})
    await communicator.receive_json_from()
    await communicator.send_json_to({"op": "unsubscribe", "channels": ["ticker.AAPL"]})
    assert await communicator.receive_json_from() == {
        "op": "unsubscribed",
        "channels": ["ticker.AAPL"],
    }
    await send_tick("AAPL", 1, "1.00")
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_ping_gets_pong_with_its_id(isolated, instruments):
    communicator = await connect()
    await communicator.send_json_to({"op": "ping", "id": 42})
    assert await communicator.receive_json_from() == {"op": "pong", "id": 42}
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_request"),
        ('{"op": "dance"}', "unknown_op"),
        ('{"op": "subscribe"}', "bad_request"),
        ('{"op": "subscribe", "channels": "ticker.AAPL"}', "bad_request"),
        ('{"op": "subscribe", "channels": ["ticker.ZZZZ"]}', "unknown_channel"),
        ('{"op": "subscribe", "channels": ["trades..AAPL"]}', "unknown_channel"),
        ('{"op": "subscribe", "channels": [17]}', "unknown_channel"),
        ('{"op": "unsubscribe", "channels": null}', "bad_request"),
        ('{"op": "ping", "pad": "' + "x" * 20000 + '"}', "too_large"),
    ],
)
async def test_bad_input_gets_an_error_and_the_socket_stays_usable(
    isolated, instruments, frame, code
):
    await instruments()
    communicator = await connect()
    await communicator.send_to(text_data=frame)
    error = await communicator.receive_json_from()
    assert error["op"] == "error"
    assert error["code"] == code
    assert error["detail"]
    # the connection still works afterwards
    await communicator.send_json_to({"op": "ping", "id": 1})
    assert await communicator.receive_json_from() == {"op": "pong", "id": 1}
    await communicator.disconnect()


async def test_binary_frames_are_refused_with_an_error(isolated):
    communicator = await connect()
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert (await communicator.receive_json_from())["code"] == "bad_request"
    await communicator.disconnect()


async def test_a_mixed_subscribe_accepts_the_good_and_reports_the_bad(isolated, instruments):
    await instruments()
    communicator = await connect()
    await communicator.send_json_to(
        {"op": "subscribe", "channels": ["ticker.AAPL", "ticker.NOPE", "ticker.BTC-USD"]}
    )
    error = await communicator.receive_json_from()
    assert error["code"] == "unknown_channel"
    assert error["channel"] == "ticker.NOPE"
    assert await communicator.receive_json_from() == {
        "op": "subscribed",
        "channels": ["ticker.AAPL", "ticker.BTC-USD"],
    }
    await communicator.disconnect()


async def test_too_many_subscriptions_are_refused(isolated, instruments):
    isolated.WS_MAX_SUBSCRIPTIONS = 1
    await instruments()
    communicator = await connect()
    await communicator.send_json_to(
        {"op": "subscribe", "channels": ["ticker.AAPL", "ticker.BTC-USD"]}
    )
    error = await communicator.receive_json_from()
    assert error["code"] == "too_many_subscriptions"
    assert (await communicator.receive_json_from())["channels"] == ["ticker.AAPL"]
    await communicator.disconnect()


async def test_server_heartbeats_and_closes_an_idle_socket(isolated):
    isolated.WS_HEARTBEAT_INTERVAL_S = 0.2
    isolated.WS_IDLE_TIMEOUT_S = 0.7
    communicator = await connect()
    assert (await communicator.receive_json_from(timeout=1))["op"] == "heartbeat"
    await communicator.send_json_to({"op": "heartbeat"})  # answering keeps it open
    assert (await communicator.receive_json_from(timeout=1))["op"] == "heartbeat"
    frames = []
    while True:
        output = await communicator.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
    assert output["code"] == 4408
    assert frames[-1]["code"] == "idle_timeout"


async def test_status_changes_reach_every_socket(isolated):
    communicator = await connect()
    await publish_flush({STATUS_KEY: {"kafka": "down", "feed": "stale"}})
    assert await communicator.receive_json_from() == {
        "op": "status",
        "stream": "up",
        "kafka": "down",
        "feed": "stale",
    }
    await communicator.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", None])
async def test_a_foreign_or_missing_origin_is_refused(isolated, origin):
    headers = [(b"origin", origin)] if origin else []
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_socket_is_told_when_the_stream_worker_stops_reporting(isolated):
    import redis.asyncio as aioredis

    from marketdata.selectors import status_key

    isolated.WS_HEARTBEAT_INTERVAL_S = 0.2
    client = aioredis.from_url(isolated.REDIS_URL)
    await client.set(status_key(), json.dumps({"kafka": "up", "feed": "live"}), ex=60)
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=[ORIGIN])
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from())["op"] == "welcome"
    assert await communicator.receive_json_from() == {
        "op": "status",
        "stream": "up",
        "kafka": "up",
        "feed": "live",
    }
    # the worker dies: its status key expires
    await client.delete(status_key())
    # (within a heartbeat or two: each process reads the status at most every 0.25 s)
    frames = [await communicator.receive_json_from(timeout=1) for _ in range(4)]
    assert {"op": "status", "stream": "down"} in frames
    await communicator.disconnect()
    await client.aclose()
