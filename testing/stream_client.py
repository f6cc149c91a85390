"""A WebSocket client of `/ws/stream/` for tests: it applies snapshots and updates as
docs/architecture.md §6 says a client must, and checks every chain (`prev_seq`), so a test can
compare what a client holds with the engine's book and see every gap it found.

It is the protocol's rules written a second time, in Python, on purpose: the tests hold the
server to the spec, not to the browser library (`static/js/marketstream.js`, tested in
Chromium on its own).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

from websockets.sync.client import ClientConnection, connect

from testing.helpers import daphne_command, manage, wait_for_http
from tredye.devbroker import free_port


class ChannelView:
    """What a client holds of one channel."""

    def __init__(self, name: str, depth: int | None) -> None:
        self.name = name
        self.depth = depth
        self.seq: int | None = None
        self.ts: int | None = None
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.trades: list[dict] = []
        self.orders: dict[int, dict] = {}
        self.latest: dict | None = None
        self.bars: dict[tuple[str, int], dict] = {}
        self.messages: list[dict] = []
        self.gaps = 0
        self.snapshots = 0
        self.resyncing = True  # until the first snapshot

    @property
    def kind(self) -> str:
        return self.name.partition(".")[0]

    def top(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        return bids, asks


class StreamTestClient:
    """One socket: subscribe, then `pump` frames into each channel's `ChannelView`."""

    def __init__(
        self,
        base_url: str,
        *,
        cookie: str | None = None,
        receive_buffer: int | None = None,
        max_queue: int | None = 1024,
    ) -> None:
        url = urlparse(base_url)
        sock = None
        if receive_buffer is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.connect((url.hostname, url.port))
        headers = {"Cookie": cookie} if cookie else None
        self.ws: ClientConnection = connect(
            f"ws://{url.netloc}/ws/stream/",
            origin=base_url,  # type: ignore[arg-type]
            additional_headers=headers,
            sock=sock,
            max_queue=max_queue,
            max_size=None,
        )
        self.channels: dict[str, ChannelView] = {}
        self.controls: list[dict] = []
        self.drop: set[str] = set()  # channels whose next update is dropped (a lost frame)
        self.resubscribed: list[str] = []
        self.frames = 0

    def close(self) -> None:
        self.ws.close()

    def subscribe(self, *channels: str, depth: int | None = None) -> None:
        message: dict[str, Any] = {"op": "subscribe", "channels": list(channels)}
        if depth is not None:
            message["depth"] = depth
        for name in channels:
            self.channels[name] = self.channels.get(name) or ChannelView(name, depth)
            self.channels[name].resyncing = True
        self.ws.send(json.dumps(message))

    def errors(self) -> list[dict]:
        return [c for c in self.controls if c.get("op") == "error"]

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Read frames for up to `seconds` (answering heartbeats); True when `until` held."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            try:
                raw = self.ws.recv(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
            except TimeoutError:
                continue
            self.feed(json.loads(raw))
        return until is not None and until()

    def feed(self, frame: dict) -> None:
        if "batch" not in frame:
            self.controls.append(frame)
            if frame.get("op") == "heartbeat":
                self.ws.send('{"op":"heartbeat"}')
            return
        self.frames += 1
        for message in frame["batch"]:
            view = self.channels.get(message["ch"])
            if view is None:
                raise AssertionError(f"a message of a channel not subscribed: {message['ch']}")
            view.messages.append(message)
            self.apply(view, message)

    def apply(self, view: ChannelView, message: dict) -> None:
        if view.depth is not None and message.get("depth") not in (None, view.depth):
            raise AssertionError(f"{view.name}: depth {message.get('depth')} not {view.depth}")
        data = message["data"]
        if message["type"] == "snapshot":
            view.snapshots += 1
            view.resyncing = False
            view.seq, view.ts = message["seq"], message["ts"]
            self._snapshot(view, data)
            return
        if view.kind in ("book", "trades", "orders"):
            if view.resyncing:
                return  # waiting for the snapshot a resubscribe asked for
            if message["seq"] <= (view.seq or 0):
                return  # stale
            if view.name in self.drop:
                self.drop.discard(view.name)
                return  # lost, on purpose
            if message.get("prev_seq") != view.seq:
                view.gaps += 1
                view.resyncing = True
                self.resubscribed.append(view.name)
                self.subscribe(view.name, depth=view.depth)
                return
        view.seq, view.ts = message["seq"], message["ts"]
        self._update(view, data)

    def _snapshot(self, view: ChannelView, data: dict) -> None:
        if view.kind == "book":
            view.bids = {Decimal(p): Decimal(q) for p, q in data["bids"]}
            view.asks = {Decimal(p): Decimal(q) for p, q in data["asks"]}
        elif view.kind == "trades":
            view.trades = list(data["trades"])
        elif view.kind == "orders":
            view.orders = {order["id"]: order for order in data["orders"]}
        elif view.kind == "candles":
            self._update(view, data)
        else:
            view.latest = data

    def _update(self, view: ChannelView, data: dict) -> None:
        if view.kind == "book":
            for side, levels in ((view.bids, data["bids"]), (view.asks, data["asks"])):
                for price, quantity in levels:
                    if Decimal(quantity):
                        side[Decimal(price)] = Decimal(quantity)
                    else:
                        side.pop(Decimal(price), None)
        elif view.kind == "trades":
            view.trades = (view.trades + data["trades"])[-50:]
        elif view.kind == "orders":
            for order in data["orders"]:
                view.orders[order["id"]] = order
        elif view.kind == "candles":
            for bar in data["bars"]:
                view.bars[(bar["interval"], bar["start"])] = bar
        else:
            view.latest = data


class Stack:
    """Daphne and the stream worker as child processes on one topic prefix (the order path's
    relay and matcher run on it already: the `order_path` fixture), for end-to-end tests."""

    def __init__(self, start, prefix: str) -> None:  # noqa: ANN001 - the process starter
        self.start = start
        self.env = {"KAFKA_TOPIC_PREFIX": prefix, "LOG_LEVEL": "INFO"}
        self.port = port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.daphne = start("daphne", *daphne_command(port), env=self.env)
        self.stream = self.start_stream()
        wait_for_http(f"{self.url}/healthz", 30, self.daphne.popen)

    def start_web(self) -> None:
        """Daphne again on the same port (after `self.daphne.stop()`: the server went away)."""
        self.daphne = self.start("daphne", *daphne_command(self.port), env=self.env)
        wait_for_http(f"{self.url}/healthz", 30, self.daphne.popen)

    def start_stream(self):  # noqa: ANN201
        return self.start("stream", *manage("run_stream"), env=self.env)

    def logs(self) -> str:
        return f"\n--- daphne\n{self.daphne.output()}\n--- stream\n{self.stream.output()}"
