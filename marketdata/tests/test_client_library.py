"""static/js/marketstream.js in a real headless Chromium, against a scripted /ws/stream/.

The scripted venue is a `websockets` server on a free port, in a thread of its own: it serves
a test page and the JS files over plain HTTP (its `process_request` hook) and plays the
protocol of docs/architecture.md §6 on /ws/stream/. It holds the truth (a book, the trades, a
ticker, an account's orders) and answers every subscribe with a snapshot of it, as the real
server does; the test changes the truth and decides which updates reach the page, so it can
lose one on purpose. The page's state is compared with the truth computed here. No Kafka, no
database, no daphne.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

pytestmark = pytest.mark.browser

STATIC_JS = Path(__file__).resolve().parents[2] / "static" / "js"
DEPTH = 5

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>marketstream test</title></head><body>
<script type="module">
import { MarketStream } from "/static/js/marketstream.js";

const log = { changes: {}, gaps: [], states: [] };
const market = new MarketStream({
  path: "/ws/stream/",
  onGap: (ch, gap) => log.gaps.push({ ch, ...gap }),
  onState: (state) => log.states.push(state),
});
const channels = new URLSearchParams(location.search).get("channels").split(",");
for (const ch of channels) {
  market.subscribe(ch, {
    depth: ch.startsWith("book.") ? __DEPTH__ : undefined,
    onChange: (state, changes) => (log.changes[ch] ||= []).push(changes),
  });
}
market.start();

function describe(state) {
  const common = {
    status: state.status, seq: state.seq, ts: state.ts, age: state.age(),
    resyncs: state.resyncs, gaps: state.gaps, dropped: state.dropped, invalid: state.invalid,
  };
  switch (state.kind) {
    case "book": return { ...common, levels: state.levels() };
    case "trades": return { ...common, trades: state.trades.map((trade) => trade.seq) };
    case "ticker": return { ...common, ticker: state.ticker };
    case "orders": return { ...common, open: state.openOrders(), fills: state.fills };
    case "candles": return { ...common, bars: state.list() };
    default: return { ...common, rows: state.list() };
  }
}
window.market = market;
window.log = log;
window.view = () =>
  Object.fromEntries([...market.states.values()].map((state) => [state.channel, describe(state)]));
window.ready = true;
</script>
</body></html>
""".replace("__DEPTH__", str(DEPTH))


def plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def now_ms() -> int:
    return int(time.time() * 1000)


class Book:
    """One symbol's book as the server knows it, and its messages at depth `DEPTH`."""

    def __init__(self, symbol: str, bids: dict[str, str], asks: dict[str, str]) -> None:
        self.channel = f"book.{symbol}"
        self.bids = {Decimal(p): Decimal(q) for p, q in bids.items()}
        self.asks = {Decimal(p): Decimal(q) for p, q in asks.items()}
        self.seq = 100

    def top(self) -> dict[str, list[list[str]]]:
        """The expected levels: best first, at most DEPTH a side, as the page shows them."""
        bids = sorted(self.bids.items(), key=lambda level: -level[0])[:DEPTH]
        asks = sorted(self.asks.items(), key=lambda level: level[0])[:DEPTH]
        return {
            "bids": [[plain(p), plain(q)] for p, q in bids],
            "asks": [[plain(p), plain(q)] for p, q in asks],
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "ch": self.channel,
            "type": "snapshot",
            "seq": self.seq,
            "ts": now_ms(),
            "depth": DEPTH,
            "data": self.top(),
        }

    def change(self, bids: dict[str, str] | None = None, asks: dict[str, str] | None = None):
        """Apply absolute quantities ("0" removes); return the update: the top-DEPTH levels
        that changed, as the spec has it (a level entering the top counts as changed)."""
        before = self.top()
        for side, changes in ((self.bids, bids or {}), (self.asks, asks or {})):
            for price, quantity in changes.items():
                if Decimal(quantity) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(quantity)
        after = self.top()
        delta = {}
        for name in ("bids", "asks"):
            old = dict(map(tuple, before[name]))
            new = dict(map(tuple, after[name]))
            delta[name] = [[p, q] for p, q in new.items() if old.get(p) != q]
            delta[name] += [[p, "0"] for p in old if p not in new]
        self.seq += 1
        return {
            "ch": self.channel,
            "type": "update",
            "seq": self.seq,
            "prev_seq": self.seq - 1,
            "ts": now_ms(),
            "depth": DEPTH,
            "data": delta,
        }


class Trades:
    def __init__(self, symbol: str, count: int) -> None:
        self.channel = f"trades.{symbol}"
        self.trades: list[dict[str, Any]] = []
        self.add(count)

    @property
    def seq(self) -> int:
        return self.trades[-1]["seq"]

    def add(self, count: int) -> dict[str, Any]:
        """New trades; return their update message."""
        prev_seq = self.trades[-1]["seq"] if self.trades else 0
        new = [
            {
                "seq": prev_seq + n,
                "price": plain(Decimal("100") + Decimal(prev_seq + n) / 100),
                "quantity": "1",
                "aggressor": "buy",
                "ts": now_ms(),
            }
            for n in range(1, count + 1)
        ]
        self.trades += new
        return {
            "ch": self.channel,
            "type": "update",
            "seq": self.seq,
            "prev_seq": prev_seq,
            "ts": now_ms(),
            "data": {"trades": new},
        }

    def latest(self, count: int = 50) -> list[int]:
        return [trade["seq"] for trade in self.trades[-count:]]

    def snapshot(self) -> dict[str, Any]:
        return {
            "ch": self.channel,
            "type": "snapshot",
            "seq": self.seq,
            "ts": now_ms(),
            "data": {"trades": self.trades[-50:]},
        }


def message(ch: str, kind: str, seq: int, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"ch": ch, "type": kind, "seq": seq, "ts": now_ms(), "data": data, **extra}


def ticker_message(seq: int, last: str, kind: str = "update") -> dict[str, Any]:
    data = {"symbol": "AAPL", "bid": last, "ask": last, "last": last, "change_pct": "0.10"}
    return {"ch": "ticker.AAPL", "type": kind, "seq": seq, "ts": now_ms(), "data": data}


class Venue:
    """The scripted server: HTTP for the page and the JS, the protocol on /ws/stream/."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.received: list[tuple[int, dict[str, Any]]] = []  # (socket number, message)
        self.connections: list[ServerConnection] = []
        self.subscriptions: dict[ServerConnection, set[str]] = {}
        # channel -> the snapshot of what the server holds now, sent after each subscribe
        self.snapshots: dict[str, Callable[[], dict[str, Any]]] = {}
        self.server: Server | None = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()

        async def listen() -> Server:
            # Made inside the loop: the server's futures belong to the loop that runs it.
            return await serve(self.handle, "127.0.0.1", 0, process_request=self.serve_file)

        self.server = self.run(listen())
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.run(self.server.wait_closed())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def run(self, awaitable, timeout: float = 10) -> Any:
        async def wrapped():
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def url(self, channels: list[str]) -> str:
        return f"http://127.0.0.1:{self.port}/?channels={','.join(channels)}"

    def serve_file(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ws/stream/":
            return None
        if path == "/favicon.ico":
            return connection.respond(HTTPStatus.NO_CONTENT, "")
        if path == "/":
            body, content_type = PAGE, "text/html; charset=utf-8"
        elif path in ("/static/js/marketstream.js", "/static/js/stream.js"):
            body = (STATIC_JS / path.rsplit("/", 1)[1]).read_text()
            content_type = "text/javascript; charset=utf-8"
        else:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        response = connection.respond(HTTPStatus.OK, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = content_type
        return response

    async def handle(self, connection: ServerConnection) -> None:
        number = len(self.connections)
        self.connections.append(connection)
        self.subscriptions[connection] = set()
        await connection.send(json.dumps({"op": "welcome", "heartbeat_s": 30}))
        async for text in connection:
            message = json.loads(text)
            self.received.append((number, message))
            if message.get("op") == "subscribe":
                channels = message["channels"]
                self.subscriptions[connection].update(channels)
                await connection.send(json.dumps({"op": "subscribed", "channels": channels}))
                batch = [self.snapshots[ch]() for ch in channels if ch in self.snapshots]
                await connection.send(json.dumps({"batch": batch}))
            elif message.get("op") == "unsubscribe":
                self.subscriptions[connection].difference_update(message["channels"])

    def publish(self, *messages: dict[str, Any]) -> None:
        """Send `messages` in one frame to every socket subscribed to their channels."""

        async def send() -> None:
            for connection in self.connections:
                mine = [m for m in messages if m["ch"] in self.subscriptions[connection]]
                if mine and connection.state is State.OPEN:
                    await connection.send(json.dumps({"batch": mine}))

        self.run(send())

    def send_text(self, text: str) -> None:
        """Send one raw frame to the newest socket."""
        self.run(self.connections[-1].send(text))

    def close_sockets(self) -> None:
        async def close() -> None:
            for connection in self.connections:
                await connection.close()

        self.run(close())

    def subscribes(self, socket: int | None = None) -> list[dict[str, Any]]:
        return [
            message
            for number, message in list(self.received)
            if message.get("op") == "subscribe" and socket in (None, number)
        ]

    def wait_for_subscribes(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.subscribes()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.subscribes()


@pytest.fixture
def venue() -> Iterator[Venue]:
    server = Venue()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(browser_page):
    """The browser page, failing the test on any uncaught error or console.error."""
    errors: list[str] = []
    browser_page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    browser_page.on(
        "console",
        lambda message: (
            errors.append(f"console.error: {message.text}") if message.type == "error" else None
        ),
    )
    yield browser_page
    assert errors == []


def open_page(page, venue: Venue, channels: list[str]) -> None:
    page.goto(venue.url(channels))
    page.wait_for_function("() => window.ready === true", timeout=5000)
    until(page, "(chs) => chs.every((ch) => view()[ch].status === 'live')", channels)


def until(page, condition: str, arg: Any = None, timeout: float = 5000) -> None:
    """Wait for a JS condition on the page; on timeout, fail showing what the page holds."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=timeout)
    except Exception as error:
        view = page.evaluate("() => ({view: view(), log})")
        raise AssertionError(f"not reached: {condition} ({arg})\n{json.dumps(view)}") from error


def view(page) -> dict[str, Any]:
    return page.evaluate("() => view()")


def next_frames(page) -> None:
    """Let two animation frames pass, so every batched onChange has run."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def at_seq(page, channel: str, seq: int) -> None:
    until(
        page,
        "([ch, seq]) => view()[ch].status === 'live' && view()[ch].seq === seq",
        [channel, seq],
    )


def make_book() -> Book:
    return Book(
        "AAPL",
        bids={"100.25": "3", "100.2": "1", "99.9": "7", "100": "2", "9.99": "4", "99.95": "5"},
        asks={"100.3": "2", "100.35": "1", "101": "6", "100.4": "2", "1000": "1", "100.5": "3"},
    )


def test_book_snapshot_updates_stale_drops_and_one_callback_per_frame(page, venue):
    book = make_book()
    venue.snapshots[book.channel] = book.snapshot
    # given a page subscribed to a book at depth 5
    open_page(page, venue, [book.channel])
    assert venue.subscribes() == [{"op": "subscribe", "channels": ["book.AAPL"], "depth": 5}]
    # then it shows the snapshot, best first, ordered as decimals ("9.99" is the lowest bid)
    assert view(page)[book.channel]["levels"] == book.top()
    assert view(page)[book.channel]["levels"]["bids"][0] == ["100.25", "3"]
    # when updates change a quantity, remove the best bid (a sixth level enters the top 5) and
    # add a better ask
    first = book.change(bids={"100.2": "1.5"})
    venue.publish(first)
    venue.publish(book.change(bids={"100.25": "0"}))
    venue.publish(book.change(asks={"100.29": "4"}))
    at_seq(page, book.channel, book.seq)
    # then the page holds the server's book
    state = view(page)[book.channel]
    assert state["levels"] == book.top()
    assert state["gaps"] == 0
    assert state["levels"]["asks"][0] == ["100.29", "4"]
    assert state["levels"]["bids"][-1] == ["9.99", "4"]

    # when a stale update arrives (an old seq, a quantity that is not the truth any more)
    venue.publish(first | {"data": {"bids": [["100.2", "99"]], "asks": []}})
    venue.publish(book.change(bids={"99.9": "8"}))
    at_seq(page, book.channel, book.seq)
    # then it was dropped: no gap, no resubscribe, the book is the server's
    state = view(page)[book.channel]
    assert state["levels"] == book.top()
    assert (state["dropped"], state["gaps"]) == (1, 0)
    assert len(venue.subscribes()) == 1

    # when ten updates arrive in one frame
    next_frames(page)
    calls_before = len(page.evaluate("() => log.changes['book.AAPL']"))
    venue.publish(*[book.change(bids={"100": str(n)}) for n in range(1, 11)])
    at_seq(page, book.channel, book.seq)
    next_frames(page)
    # then all apply, and the channel's callback ran once for them
    assert view(page)[book.channel]["levels"] == book.top()
    assert len(page.evaluate("() => log.changes['book.AAPL']")) == calls_before + 1


def test_a_book_gap_resubscribes_and_ends_with_the_servers_book(page, venue):
    book = make_book()
    venue.snapshots[book.channel] = book.snapshot
    open_page(page, venue, [book.channel])
    venue.publish(book.change(asks={"100.3": "5"}))
    at_seq(page, book.channel, book.seq)
    held = book.seq
    # when one update is lost on the way (a level the next update does not touch)
    book.change(bids={"99.9": "0", "100.1": "9"})
    venue.publish(book.change(asks={"100.35": "2"}))
    # then the page sees the gap and subscribes to that channel again, with its depth
    until(page, "() => log.gaps.length === 1")
    assert page.evaluate("() => log.gaps") == [
        {"ch": "book.AAPL", "held": held, "prev_seq": held + 1, "seq": held + 2}
    ]
    subscribes = venue.wait_for_subscribes(2)
    assert subscribes[1] == {"op": "subscribe", "channels": ["book.AAPL"], "depth": 5}
    # and the fresh snapshot gives it exactly the server's book
    at_seq(page, book.channel, book.seq)
    state = view(page)[book.channel]
    assert state["levels"] == book.top()
    assert ["100.1", "9"] in state["levels"]["bids"]
    assert (state["gaps"], state["resyncs"]) == (1, 2)
    # and the chain goes on from the snapshot
    venue.publish(book.change(bids={"100.1": "0"}))
    at_seq(page, book.channel, book.seq)
    assert view(page)[book.channel]["levels"] == book.top()
    assert len(venue.subscribes()) == 2


def test_a_trades_gap_resubscribes_and_keeps_the_latest_fifty(page, venue):
    trades = Trades("AAPL", 60)
    venue.snapshots[trades.channel] = trades.snapshot
    open_page(page, venue, [trades.channel])
    assert view(page)[trades.channel]["trades"] == trades.latest(50)
    venue.publish(trades.add(2))
    venue.publish(trades.add(3))
    at_seq(page, trades.channel, trades.seq)
    assert view(page)[trades.channel]["trades"] == trades.latest(50)
    # when a trades update is lost
    trades.add(1)
    venue.publish(trades.add(2))
    # then the page resubscribes to the trades and ends with the server's latest 50
    until(page, "() => log.gaps.length === 1")
    assert venue.wait_for_subscribes(2)[1] == {"op": "subscribe", "channels": ["trades.AAPL"]}
    at_seq(page, trades.channel, trades.seq)
    assert view(page)[trades.channel]["trades"] == trades.latest(50)
    venue.publish(trades.add(1))
    at_seq(page, trades.channel, trades.seq)
    assert view(page)[trades.channel]["trades"] == trades.latest(50)
    # and the callback was told of the new trades only, not of the snapshot's
    told = [
        t["seq"] for c in page.evaluate("() => log.changes['trades.AAPL']") for t in c["trades"]
    ]
    assert told == [61, 62, 63, 64, 65, 69]


def test_the_ticker_keeps_the_latest_by_seq(page, venue):
    venue.snapshots["ticker.AAPL"] = lambda: ticker_message(4, "100.00", "snapshot")
    open_page(page, venue, ["ticker.AAPL"])
    venue.publish(ticker_message(5, "100.05"))
    venue.publish(ticker_message(3, "99.00"))  # older: dropped
    venue.publish(ticker_message(7, "100.07"), ticker_message(6, "100.06"))  # 6 is older than 7
    at_seq(page, "ticker.AAPL", 7)
    next_frames(page)
    state = view(page)["ticker.AAPL"]
    assert (state["ticker"]["last"], state["dropped"]) == ("100.07", 2)
    assert 0 <= state["age"] < 5000


def test_a_reconnect_resyncs_every_channel(page, venue):
    book = make_book()
    trades = Trades("AAPL", 10)
    ticker = {"seq": 1, "last": "100.00"}
    venue.snapshots[book.channel] = book.snapshot
    venue.snapshots[trades.channel] = trades.snapshot
    venue.snapshots["ticker.AAPL"] = lambda: ticker_message(
        ticker["seq"], ticker["last"], "snapshot"
    )
    channels = [book.channel, trades.channel, "ticker.AAPL"]
    open_page(page, venue, channels)
    # when the market moves, none of it reaches the page, and the server closes the socket
    book.change(bids={"100.25": "0", "100.27": "1"})
    trades.add(3)
    ticker.update(seq=9, last="101.50")
    venue.close_sockets()
    until(page, "(chs) => chs.every((ch) => view()[ch].status === 'resyncing')", channels)
    # then the page reconnects, subscribes to every channel again and resyncs each of them
    until(page, "(chs) => chs.every((ch) => view()[ch].resyncs === 2)", channels)
    for channel, seq in ((book.channel, book.seq), (trades.channel, trades.seq)):
        at_seq(page, channel, seq)
    at_seq(page, "ticker.AAPL", 9)
    assert venue.subscribes(socket=1) == [
        {"op": "subscribe", "channels": ["book.AAPL"], "depth": 5},
        {"op": "subscribe", "channels": ["trades.AAPL", "ticker.AAPL"]},
    ]
    state = view(page)
    assert state[book.channel]["levels"] == book.top()
    assert state[trades.channel]["trades"] == trades.latest()
    assert state["ticker.AAPL"]["ticker"]["last"] == "101.50"
    assert "reconnecting" in page.evaluate("() => log.states")
    # and updates on the new socket apply
    venue.publish(book.change(asks={"100.3": "0"}))
    at_seq(page, book.channel, book.seq)
    assert view(page)[book.channel]["levels"] == book.top()


def test_malformed_and_unknown_messages_are_ignored(page, venue):
    book = make_book()
    venue.snapshots[book.channel] = book.snapshot
    open_page(page, venue, [book.channel])
    seq = book.seq
    for text in ["not json", "null", "[1]", '{"batch": "x"}', '{"op": "mystery"}']:
        venue.send_text(text)
    venue.send_text(
        json.dumps(
            {
                "batch": [
                    None,
                    5,
                    {"ch": 7},
                    {"ch": "book.MSFT", "type": "update", "seq": 1, "prev_seq": 0, "data": {}},
                    {"ch": "book.AAPL", "type": "update", "seq": "x", "data": {}},
                    {"ch": "book.AAPL", "type": "weird", "seq": seq + 1, "data": {}},
                    # a bad price: nothing of it may apply, not even its good ask
                    {
                        "ch": "book.AAPL",
                        "type": "update",
                        "seq": seq + 1,
                        "prev_seq": seq,
                        "data": {"asks": [["100.3", "9"]], "bids": [["abc", "1"]]},
                    },
                ]
            }
        )
    )
    # then nothing changed, and the next good update still applies
    venue.publish(book.change(asks={"101": "1"}))
    at_seq(page, book.channel, book.seq)
    state = view(page)[book.channel]
    assert state["levels"] == book.top()
    assert (state["invalid"], state["gaps"]) == (3, 0)


def test_private_channels_orders_balances_and_candles(page, venue):
    orders = {
        1: {"id": 1, "status": "new", "quantity": "5", "filled_quantity": "0"},
        2: {"id": 2, "status": "new", "quantity": "1", "filled_quantity": "0"},
    }
    account = {"seq": 10}
    final = {"filled", "canceled", "rejected", "expired"}
    usd = {"asset": "USD", "available": "10", "held": "0", "pending": "0"}
    venue.snapshots["orders"] = lambda: message(
        "orders",
        "snapshot",
        account["seq"],
        {"orders": [order for order in orders.values() if order["status"] not in final]},
    )
    venue.snapshots["balances"] = lambda: message("balances", "snapshot", 1, {"balances": [usd]})
    forming = {"start": 60_000, "close": "100", "closed": False}
    venue.snapshots["candles.AAPL.1m"] = lambda: message(
        "candles.AAPL.1m", "snapshot", 1, {"bars": [forming]}
    )
    channels = ["orders", "balances", "candles.AAPL.1m"]
    open_page(page, venue, channels)
    assert venue.subscribes() == [{"op": "subscribe", "channels": channels}]
    assert [order["id"] for order in view(page)["orders"]["open"]] == [1, 2]

    # when order 1 fills partly, order 2 fills completely and order 3 is placed
    fills = [{"seq": 7, "order_id": 1, "quantity": "2"}, {"seq": 8, "order_id": 2, "quantity": "1"}]
    orders[1] = orders[1] | {"status": "partially_filled", "filled_quantity": "2"}
    orders[2] = orders[2] | {"status": "filled", "filled_quantity": "1"}
    orders[3] = {"id": 3, "status": "new", "quantity": "4", "filled_quantity": "0"}
    data = {"orders": [orders[1], orders[2], orders[3]], "fills": fills}
    venue.publish(message("orders", "update", 11, data, prev_seq=10))
    at_seq(page, "orders", 11)
    next_frames(page)
    # then the filled order left the open set and the callback was told of it and the fills
    assert view(page)["orders"]["open"] == [orders[1], orders[3]]
    changes = page.evaluate("() => log.changes.orders.at(-1)")
    assert changes == {"changed": [orders[1], orders[3]], "closed": [orders[2]], "fills": fills}

    # when an account event is lost (order 3 was canceled), the channel resyncs to the server's
    # open orders
    orders[3] = orders[3] | {"status": "canceled"}
    account["seq"] = 13
    data = {"orders": [orders[1] | {"status": "new"}], "fills": []}
    venue.publish(message("orders", "update", 13, data, prev_seq=12))
    until(page, "() => log.gaps.length === 1")
    assert venue.wait_for_subscribes(2)[1] == {"op": "subscribe", "channels": ["orders"]}
    at_seq(page, "orders", 13)
    assert view(page)["orders"]["open"] == [orders[1]]

    # balances: every message replaces the list; an older one is dropped
    eur = {"asset": "EUR", "available": "1", "held": "0", "pending": "0"}
    usd_now = usd | {"available": "4", "held": "6"}
    venue.publish(message("balances", "snapshot", 3, {"balances": [usd_now, eur]}))
    venue.publish(message("balances", "snapshot", 2, {"balances": [usd]}))
    at_seq(page, "balances", 3)
    next_frames(page)
    assert view(page)["balances"]["rows"] == [usd_now, eur]

    # candles: the latest per start wins, a closed bar is final
    closed = forming | {"close": "101", "closed": True}
    following = {"start": 120_000, "close": "102", "closed": False}
    late = forming | {"close": "999"}
    venue.publish(message("candles.AAPL.1m", "update", 2, {"bars": [closed, following]}))
    venue.publish(message("candles.AAPL.1m", "update", 3, {"bars": [late]}))
    at_seq(page, "candles.AAPL.1m", 3)
    assert view(page)["candles.AAPL.1m"]["bars"] == [closed, following]
