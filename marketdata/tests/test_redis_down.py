"""Redis away and back: sockets stay open and say so, the page polls, everything resumes.

Each test runs its own Redis (`private_redis`) so it can kill it and start it again on the
same port, as a Redis restart does: empty, and every client disconnected.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from playwright.sync_api import expect
from redis.exceptions import RedisError

from marketdata.selectors import snapshot_key
from marketdata.stream import StreamWorker
from testing.helpers import daphne_command, manage, publish_flush, wait_for_http
from tredye import kafka
from tredye.asgi import application
from tredye.devbroker import free_port, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


class PrivateRedis:
    """A Redis of one test's own on a free port, with no persistence: a restart loses all."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log_path = log_dir / f"redis-{port}.log"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server not found: run scripts/setup.sh")
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - the distribution's redis-server
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no", "--dir", str(self.log_path.parent)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout_s, "redis-server")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(free_port(), tmp_path)
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture
def on_private_redis(settings, private_redis):
    """This process's sockets, snapshots and stream subscription on the private Redis."""
    settings.REDIS_URL = private_redis.url
    settings.WS_HEARTBEAT_INTERVAL_S = 0.3
    return private_redis


async def receive_until(communicator, predicate, timeout_s: float = 10.0) -> dict:
    """The first frame that satisfies `predicate`, skipping others (heartbeats and the like)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the expected frame never came"
        frame = await communicator.receive_json_from(timeout=remaining)
        if predicate(frame):
            return frame


def is_status(frame: dict) -> bool:
    return frame.get("op") == "status"


@pytest.fixture
def sender(on_private_redis) -> str:
    """Where the stream worker's process publishes: the private Redis, through a connection
    of its own (as the worker's own process has)."""
    return on_private_redis.url


async def send_tick(redis_url: str, symbol: str, last: str) -> None:
    channel = f"ticker.{symbol}"
    message = {"ch": channel, "seq": 1, "ts": 1, "data": {"symbol": symbol, "last": last}}
    await publish_flush({channel: message}, redis_url=redis_url)


async def receive_price(communicator, sender, price: str, timeout_s: float = 10.0) -> None:
    """Keep publishing `price` until the socket delivers it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # the sender's own connection may still be coming back
        with contextlib.suppress(OSError, RedisError):
            await send_tick(sender, "AAPL", price)
        while not await communicator.receive_nothing(timeout=0.3):
            frame = await communicator.receive_json_from()
            if any(m["data"]["last"] == price for m in frame.get("batch", ())):
                return
    raise AssertionError(f"{price} never reached the socket")


async def subscribe_to_aapl(communicator) -> None:
    await communicator.send_json_to({"op": "subscribe", "channels": ["ticker.AAPL"]})
    ack = await receive_until(communicator, lambda f: f.get("op") == "subscribed")
    assert ack["channels"] == ["ticker.AAPL"]


async def test_a_socket_opened_while_redis_is_down_gets_a_status_not_1011_and_goes_live_after(
    make_instrument, on_private_redis, sender
):
    # given Redis is down
    await database_sync_to_async(make_instrument)("AAPL", price="200.00")
    on_private_redis.kill()
    # when a page opens its socket
    communicator = WebsocketCommunicator(application, "/ws/stream/", headers=[ORIGIN])
    connected, _ = await communicator.connect()
    # then it is accepted and told the live stream is unavailable, instead of closed with 1011
    assert connected
    assert (await communicator.receive_json_from())["op"] == "welcome"
    assert await communicator.receive_json_from() == {
        "op": "status",
        "stream": "down",
        "redis": "down",
        "live": "down",
    }
    # and the socket keeps working: subscribe and ping are answered
    await subscribe_to_aapl(communicator)
    await communicator.send_json_to({"op": "ping", "id": 7})
    assert (await receive_until(communicator, lambda f: f.get("op") == "pong"))["id"] == 7
    # when Redis comes back (empty, on the same port)
    on_private_redis.start()
    # then the socket says so, and its process subscribes to the stream again
    status = await receive_until(communicator, lambda f: is_status(f) and "live" not in f)
    assert "redis" not in status
    await receive_price(communicator, sender, "101.00")
    await communicator.disconnect()


def test_the_stream_worker_conflates_while_redis_is_down_and_republishes_when_it_returns(
    isolated_stream, kafka_topics, on_private_redis
):
    import redis

    from testing.helpers import tick

    kafka.ensure_topics()
    producer = kafka.producer()
    worker = StreamWorker(flush_interval_ms=16, stale_after_s=5)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = redis.Redis.from_url(on_private_redis.url)
    try:
        deadline = time.monotonic() + 30
        while not worker.connected:
            assert time.monotonic() < deadline, "stream worker never connected"
            time.sleep(0.05)
        time.sleep(0.2)
        # given Redis is killed
        on_private_redis.kill()
        # when ticks for two symbols keep arriving
        for seq in range(1, 41):
            symbol = "AAPL" if seq % 2 else "MSFT"
            value = tick(symbol, seq, Decimal("100.00") + seq)
            producer.send(kafka.topic(kafka.TICKS), key=symbol.encode(), value=value)
        producer.flush()
        deadline = time.monotonic() + 20
        while worker.consumed < 40:
            assert time.monotonic() < deadline, f"consumed only {worker.consumed}"
            time.sleep(0.05)
        # then the worker keeps running and knows Redis is away (from its next flush)
        assert thread.is_alive()
        deadline = time.monotonic() + 2
        while worker.redis_ok and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.redis_ok is False
        # and when Redis restarts empty, each symbol's latest price is published again
        on_private_redis.start()
        deadline = time.monotonic() + 10
        while True:
            raw = client.hgetall(snapshot_key())
            snapshot = {key.decode(): json.loads(value) for key, value in raw.items()}
            if len(snapshot) == 2:
                break
            assert time.monotonic() < deadline, f"snapshot after Redis returned: {snapshot}"
            time.sleep(0.1)
        assert snapshot["ticker.AAPL"]["data"]["last"] == "139.00"
        assert snapshot["ticker.MSFT"]["data"]["last"] == "140.00"
        # (the worker sets the flag just after the publish this test saw: give it a moment)
        deadline = time.monotonic() + 2
        while not worker.redis_ok and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.redis_ok is True
    finally:
        worker.stop()
        thread.join(15)
        client.close()
        producer.close()
    assert not thread.is_alive(), "stream worker did not stop"


def test_the_ticker_snapshot_endpoint_serves_saved_prices_without_redis(
    make_instrument, client, settings
):
    from marketdata.models import PriceModel

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    make_instrument("AAPL", price="200.00")
    make_instrument("MSFT", price="400.00")  # never priced by the feed: left out
    PriceModel.objects.filter(instrument__symbol="AAPL").update(
        last_price=Decimal("210.00"), session_open=Decimal("200.00")
    )
    response = client.get("/marketdata/api/tickers/")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    [message] = response.json()["messages"]
    assert message["ch"] == "ticker.AAPL"
    saved = PriceModel.objects.get(instrument__symbol="AAPL").updated_at
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert message["ts"] == (saved - epoch) // datetime.timedelta(milliseconds=1)  # not "now"
    data = message["data"]
    assert (data["last"], data["open"], data["change_pct"]) == ("210.00", "200.00", "5.00")
    assert Decimal(data["bid"]) < Decimal("210.00") < Decimal(data["ask"])


def test_the_watchlist_renders_saved_prices_when_redis_is_down(make_instrument, client, settings):
    from marketdata.models import PriceModel

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    make_instrument("AAPL", price="200.00")
    PriceModel.objects.update(last_price=Decimal("210.00"), session_open=Decimal("200.00"))
    response = client.get("/")
    assert response.status_code == 200
    assert b'data-field="last">210.00<' in response.content


@pytest.mark.browser
def test_the_page_polls_while_redis_is_down_and_goes_live_when_it_returns(
    make_instrument, private_redis, start_test_process, kafka_topics, browser_page
):
    # given listed instruments, a feed, and a web server and stream worker on a private Redis
    make_instrument("AAPL", price="229.87")
    make_instrument("MSFT", price="417.12")
    on_redis = {"REDIS_URL": private_redis.url, "CHANNEL_LAYER_REDIS_URL": private_redis.url}
    port = free_port()
    daphne = start_test_process("daphne", *daphne_command(port), env=on_redis)
    stream = start_test_process("stream", *manage("run_stream"), env=on_redis)
    feed = start_test_process("feed", *manage("run_feed", "--rate", "40", "--seed", "5"))
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", 30, daphne.popen)
    page = browser_page
    cell = page.locator('tr[data-symbol="AAPL"] [data-field="last"]')
    connection = page.locator("#connection")
    platform_status = page.locator("#platform-status")

    def logs() -> str:
        return f"\n{daphne.output()}\n{stream.output()}\n{feed.output()}"

    def new_prices(timeout_s: float) -> set[str]:
        """AAPL's last prices shown from now on, other than the current one, until two are
        seen or the time is up."""
        start = cell.text_content().strip()
        seen: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(seen) < 2:
            text = cell.text_content().strip()
            if text != start and re.fullmatch(r"\d+\.\d{2}", text):
                seen.add(text)
            page.wait_for_timeout(100)
        return seen

    polls: list[float] = []
    page.on(
        "request",
        lambda request: polls.append(time.monotonic()) if "/api/tickers/" in request.url else None,
    )
    page.goto(url + "/")
    expect(connection).to_have_attribute("data-state", "live", timeout=10000)
    assert len(new_prices(10)) >= 2, logs()
    assert polls == []  # live: no polling
    # when Redis goes down
    private_redis.kill()
    # then the page says the live stream is unavailable and polls, and prices still move
    expect(connection).to_have_attribute("data-state", "polling", timeout=15000)
    expect(platform_status).to_contain_text("Live stream unavailable", timeout=5000)
    expect(platform_status).to_contain_text("every 2 s")
    assert len(new_prices(12)) >= 2, f"prices froze while polling{logs()}"
    assert len(polls) >= 3
    # when Redis comes back, empty, on the same port
    private_redis.start()
    # then the page goes live again, stops polling, and prices move through the stream
    expect(connection).to_have_attribute("data-state", "live", timeout=15000)
    expect(platform_status).not_to_contain_text("Live stream unavailable", timeout=10000)
    live_again = time.monotonic()
    assert len(new_prices(10)) >= 2, f"prices froze after Redis returned{logs()}"
    assert [at for at in polls if at > live_again + 0.5] == [], "still polling when live"
    assert stream.popen.poll() is None, f"the stream worker exited{logs()}"
