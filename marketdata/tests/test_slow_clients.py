"""A client that stops reading costs the server a bounded amount of memory: its process's hub
skips its frames while its send buffer is full (`marketdata.hub.SEND_BUFFER_LIMIT`) and sends
it fresh snapshots once it reads again, never a queue of everything it missed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from marketdata.broadcast import flush_payload
from marketdata.channels import pubsub_channel
from testing.helpers import daphne_command, wait_for_http
from testing.stream_client import StreamTestClient
from tredye.devbroker import free_port

pytestmark = pytest.mark.django_db(transaction=True)

FLUSHES = 800
PAD = 100_000  # bytes of each message: 80 MB addressed to each socket in all


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_does_not_grow_the_servers_memory(
    isolated_stream, start_test_process, make_instrument
):
    make_instrument("AAPL", price="100.00")
    port = free_port()
    env = {"KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX, "WS_IDLE_TIMEOUT_S": "120"}
    daphne = start_test_process("daphne", *daphne_command(port), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", 30, daphne.popen)
    # given a client that reads, and one that reads nothing after subscribing (its library
    # stops taking frames off the socket once it holds one, its receive buffer is small)
    reader = StreamTestClient(url)
    stalled = StreamTestClient(url, receive_buffer=4096, max_queue=1)
    for client in (reader, stalled):
        client.subscribe("ticker.AAPL")
        client.pump(2, lambda c=client: any(m.get("op") == "subscribed" for m in c.controls))
    publisher = redis.Redis.from_url(settings.REDIS_URL)
    pad = "x" * PAD

    def publish(seq: int) -> None:
        message = {"ch": "ticker.AAPL", "seq": seq, "ts": int(time.time() * 1000)}
        message |= {"type": "snapshot", "data": {"last": f"{seq}.00", "pad": pad}}
        publisher.publish(pubsub_channel(), flush_payload({"ticker.AAPL": json.dumps(message)}))

    for seq in range(1, 21):  # warm up: the server's own buffers and caches settle
        publish(seq)
        reader.pump(0.02)
    reader.pump(1)
    before = rss_bytes(daphne.popen.pid)
    # when 80 MB more is addressed to each socket
    for seq in range(21, FLUSHES + 1):
        publish(seq)
        if seq % 10 == 0:
            reader.pump(0.05)
    last = f"{FLUSHES}.00"
    assert reader.pump(
        20, lambda: (reader.channels["ticker.AAPL"].latest or {}).get("last") == last
    )
    grown = rss_bytes(daphne.popen.pid) - before
    # then the server's memory grew by far less than what the stalled client missed
    assert grown < 25 * 1024 * 1024, f"daphne grew by {grown / 2**20:.1f} MiB"
    # and when the stalled client reads again, it gets the latest value after a short backlog
    # (what sat in the kernel's buffers and the server's bounded one), not 800 frames
    stalled_view = stalled.channels["ticker.AAPL"]
    assert stalled.pump(20, lambda: (stalled_view.latest or {}).get("last") == last), (
        f"{stalled.frames} frames, last {(stalled_view.latest or {}).get('last')}"
    )
    assert stalled.frames < 150, stalled.frames
    reader.close()
    stalled.close()
    publisher.close()
