"""The fan-out of one web process: one Redis subscription, shared frames, bounded sockets.

Each process (each event loop) has one `Hub`. It subscribes once to the stream worker's
flushes (`marketdata.broadcast`), keeps the state of every channel one of its sockets watches
(`ChannelState`: the latest ticker or bar, a book's top levels and a view per depth, the
tape, an account's open orders), and hands each flush to its sockets as frames built once
per *set of subscriptions*: sockets that watch the same channels share one frame text, so the
cost of a socket-frame is a send, not a decode, filter and encode (decision 0014).

A socket's snapshot comes from the same state, in the same loop pass that adds it to its
group, so the updates it gets next continue exactly from it. A socket whose client does not
read has its frames skipped while its send buffer is over `SEND_BUFFER_LIMIT` (counted as
conflated drops); when it drains, it gets a fresh snapshot of each of its channels: the
latest value, never a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings

from accounts.selectors import balances_of
from marketdata import selectors
from marketdata.broadcast import payload_parse
from marketdata.channels import DEFAULT_BOOK_DEPTH, STATUS_KEY, key_kind, pubsub_channel
from marketdata.market_state import balances_message, positions_message
from marketdata.socket_metrics import batch_sent
from marketdata.stream_state import (
    BookMirror,
    DepthView,
    Tape,
    encode,
    levels_parse,
    stream_message,
)
from trading.messages import order_message
from trading.models import Order
from tredye.metrics import WS_CONFLATED_DROPS

logger = logging.getLogger(__name__)

REDIS_ERRORS = (OSError, TimeoutError, aioredis.RedisError)
# Bytes a socket may have waiting in its send buffer before its frames are skipped.
SEND_BUFFER_LIMIT = 256 * 1024
RECONNECT_S = 1.0
LINK_TIMEOUT_S = 2.0  # a Redis call is cut short after this
STATUS_FRESH_S = 0.25  # the platform status is read at most this often per process
MAX_BATCH = 256  # flushes handled in one pass at most
Out = dict[str, list[str]]  # out key -> the message texts its sockets get, in order
CLOSED_STATUSES = frozenset(Order.Status) - frozenset(Order.OPEN_STATUSES)


class Frame:
    """One frame for every socket of a group: its text, its UTF-8 once, and the server's
    prepared form of it once (autobahn's broadcast API, set by the first socket that sends
    it; every socket of a daphne process shares one protocol factory)."""

    __slots__ = ("data", "prepared", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode()
        self.prepared: Any = None


class Subscriber(Protocol):
    """What the hub needs of a socket (`marketdata.consumers.StreamConsumer`)."""

    def send_frame(self, frame: Frame) -> Awaitable[None]: ...
    def buffered_bytes(self) -> int | None: ...
    def on_status(self, status: dict) -> Awaitable[None]: ...
    def on_link(self, up: bool) -> Awaitable[None]: ...


def out_key(key: str, depth: int | None) -> str:
    """The key of what a socket receives: a book's per-depth view (`book.AAPL@20`), else the
    channel key itself."""
    return f"{key}@{depth}" if depth is not None else key


# -- the state of one channel in one process ----------------------------------------------


class ChannelState:
    """A channel's state in this process, loaded from the worker's snapshot (or the
    database, for a private channel) and followed through the flushes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.buffer: list[str] | None = []  # messages that arrive while loading
        self.loaded = asyncio.Event()
        self.reloading = False

    async def fetch(self, hub: Hub) -> None:
        raise NotImplementedError

    def follow(self, text: str, out: Out) -> bool:
        """Apply one flush's message; put what sockets get into `out`. False: a gap."""
        raise NotImplementedError

    def snapshot(self, depth: int | None) -> str | None:
        raise NotImplementedError

    def outs(self) -> list[str]:
        return [self.key]


class LatestState(ChannelState):
    """Tickers, bars, balances and positions: every message stands alone; the latest is the
    snapshot."""

    text: str | None = None

    async def fetch(self, hub: Hub) -> None:
        if self.text is None:
            self.text = await hub.stored_snapshot(self.key)

    def follow(self, text: str, out: Out) -> bool:
        self.text = text
        out[self.key] = [text]  # latest wins, within a batch of flushes too
        return True

    def snapshot(self, depth: int | None) -> str | None:
        return self.text


class CandlesState(LatestState):
    """Bars: the latest message is the snapshot, but within a batch of flushes each is sent
    (a bar that closed is in one message only)."""

    def follow(self, text: str, out: Out) -> bool:
        self.text = text
        out.setdefault(self.key, []).append(text)
        return True


class BookState(ChannelState):
    """A book's top levels as the worker publishes them, and a view per depth asked for."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.mirror = BookMirror()
        self.views: dict[int, DepthView] = {}
        self.ts: int | None = None
        self.dirty = False  # followed since its views were last refreshed

    async def fetch(self, hub: Hub) -> None:
        text = await hub.stored_snapshot(self.key)
        if text is not None:
            self._take(json.loads(text))

    def _take(self, message: dict) -> None:
        self.mirror.replace(message["seq"], levels_parse(message["data"]))
        self.ts = message.get("ts")

    def view(self, depth: int) -> DepthView:
        view = self.views.get(depth)
        if view is None:
            view = self.views[depth] = DepthView(depth, self.mirror)
        return view

    def follow(self, text: str, out: Out) -> bool:
        """Follow the worker's top levels; the views are refreshed once per batch."""
        message = json.loads(text)
        seq = message["seq"]
        if message["type"] == "snapshot":
            self._take(message)
        elif seq <= self.mirror.seq:
            return True
        elif message.get("prev_seq", seq) > self.mirror.seq:
            return False  # something between is missing
        else:
            # prev_seq <= held < seq: absolute quantities of every level changed in
            # (prev_seq, seq] bring any state in that range to seq (a load can land inside).
            self.mirror.apply(levels_parse(message["data"]))
            self.mirror.seq = seq
            self.ts = message.get("ts")
        self.dirty = True
        return True

    def refresh(self, out: Out) -> None:
        """Each view's update, where its top levels changed (a reload too ends here: sockets
        get the difference, and their chain goes on)."""
        for depth, view in self.views.items():
            refreshed = view.refresh(self.mirror)
            if refreshed is not None:
                prev, data = refreshed
                out[out_key(self.key, depth)] = [
                    encode(
                        stream_message(
                            self.key,
                            type="update",
                            seq=view.seq,
                            prev_seq=prev,
                            ts=self.ts,
                            depth=depth,
                            data=data,
                        )
                    )
                ]
        self.dirty = False

    def snapshot(self, depth: int | None) -> str:
        view = self.view(depth or DEFAULT_BOOK_DEPTH)
        return encode(
            stream_message(
                self.key,
                type="snapshot",
                seq=view.seq,
                ts=self.ts,
                depth=depth,
                data=view.snapshot_data(),
            )
        )

    def outs(self) -> list[str]:
        return [out_key(self.key, depth) for depth in self.views]


class TapeState(ChannelState):
    """The latest trades; updates pass through as the worker encoded them."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.tape = Tape()
        self.ts: int | None = None

    async def fetch(self, hub: Hub) -> None:
        text = await hub.stored_snapshot(self.key)
        if text is not None:
            message = json.loads(text)
            self.tape = Tape(message["data"]["trades"], message["seq"])
            self.ts = message.get("ts")

    def follow(self, text: str, out: Out) -> bool:
        message = json.loads(text)
        if message["type"] == "snapshot":
            self.tape = Tape(message["data"]["trades"], message["seq"])
        elif message["seq"] <= self.tape.seq:
            return True
        elif message.get("prev_seq", message["seq"]) > self.tape.seq:
            return False  # trades between are missing
        else:
            held = self.tape.seq
            new = [trade for trade in message["data"]["trades"] if self.tape.add(trade)]
            if message["prev_seq"] != held:
                # A load landed inside this update: pass on only what is new, chained on
                # what the sockets hold.
                message["prev_seq"], message["data"] = held, {"trades": new}
                text = encode(message)
        self.ts = message.get("ts")
        out.setdefault(self.key, []).append(text)
        return True

    def snapshot(self, depth: int | None) -> str:
        return encode(
            stream_message(
                self.key,
                type="snapshot",
                seq=self.tape.seq,
                ts=self.ts,
                data=self.tape.snapshot_data(),
            )
        )


class OrdersState(ChannelState):
    """An account's open orders, loaded from PostgreSQL with the number of its last event."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.account_id = int(key.partition(".")[2])
        self.orders: dict[int, dict] = {}
        self.seq = 0
        self.ts: int | None = None

    async def fetch(self, hub: Hub) -> None:
        self.orders, self.seq = await _open_orders(self.account_id)

    def follow(self, text: str, out: Out) -> bool:
        message = json.loads(text)
        if message["seq"] <= self.seq:
            return True
        if message.get("prev_seq", message["seq"]) > self.seq:
            return False  # events between are missing
        if message["prev_seq"] != self.seq:
            # A load landed inside this update: its orders are their latest states, so they
            # apply; the sockets get it chained on what they hold.
            message["prev_seq"] = self.seq
            text = encode(message)
        for order in message["data"]["orders"]:
            if order["status"] in CLOSED_STATUSES:
                self.orders.pop(order["id"], None)
            else:
                self.orders[order["id"]] = order
        self.seq, self.ts = message["seq"], message.get("ts")
        out.setdefault(self.key, []).append(text)
        return True

    def snapshot(self, depth: int | None) -> str:
        return encode(
            stream_message(
                "orders",
                type="snapshot",
                seq=self.seq,
                ts=self.ts,
                data={"orders": list(self.orders.values())},
            )
        )


class AccountLatestState(LatestState):
    """Balances or positions: loaded from PostgreSQL, then every message replaces it."""

    async def fetch(self, hub: Hub) -> None:
        kind, _, account = self.key.partition(".")
        self.text = await _account_snapshot(kind, int(account))


@database_sync_to_async
def _open_orders(account_id: int) -> tuple[dict[int, dict], int]:
    snapshot = selectors.open_orders_snapshot(account_id)
    return {order.pk: order_message(order) for order in snapshot.orders}, snapshot.seq


@database_sync_to_async
def _account_snapshot(kind: str, account_id: int) -> str:
    seq = selectors.open_orders_snapshot(account_id).seq
    ts = int(time.time() * 1000)
    if kind == "balances":
        return encode(balances_message(balances_of([account_id])[account_id], seq=seq, ts=ts))
    rows = selectors.account_positions([account_id])[account_id]
    return encode(positions_message(rows, seq=seq, ts=ts))


def state_for(key: str) -> ChannelState:
    kind = key_kind(key)
    if kind == "book":
        return BookState(key)
    if kind == "trades":
        return TapeState(key)
    if kind == "orders":
        return OrdersState(key)
    if kind in ("balances", "positions"):
        return AccountLatestState(key)
    if kind == "candles":
        return CandlesState(key)
    return LatestState(key)


# -- the hub ------------------------------------------------------------------------------


class Hub:
    def __init__(self) -> None:
        self.redis = aioredis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        self.states: dict[str, ChannelState] = {}
        self.watchers: dict[str, set[Subscriber]] = {}  # channel key -> its sockets here
        self.groups: dict[tuple[str, ...], set[Subscriber]] = {}  # out keys -> sockets
        self.membership: dict[Subscriber, tuple[str, ...]] = {}
        self.subscriptions: dict[Subscriber, dict[str, int | None]] = {}  # key -> depth
        self.lagging: set[Subscriber] = set()
        self.connected = False
        self.linked = asyncio.Event()
        self.tried = asyncio.Event()  # the subscription was tried, and made or refused
        self.status: dict | None = None
        self.status_read: tuple[float, dict] | None = None  # (when, what)
        self.reader: asyncio.Task | None = None
        self.drops = WS_CONFLATED_DROPS.labels("socket")

    # -- sockets ----------------------------------------------------------------------------
    def join(self, socket: Subscriber) -> None:
        self.subscriptions.setdefault(socket, {})
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def leave(self, socket: Subscriber) -> None:
        for key in list(self.subscriptions.get(socket, {})):
            self._unwatch(socket, key)
        self.subscriptions.pop(socket, None)
        self._regroup(socket)
        self.lagging.discard(socket)
        if not self.subscriptions and self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await self.reader
            self.reader = None
            self.connected = False
            self.linked.clear()
            self.tried.clear()
            self.states.clear()

    async def wait_linked(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until the subscription was tried; whether it is up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.tried.wait()
        return self.connected

    async def subscribe(self, socket: Subscriber, keys: dict[str, int | None]) -> None:
        """Add `keys` (key -> book depth) to the socket's subscriptions and send it their
        snapshots, in one frame. Subscribing again to a key sends its snapshot again."""
        for key in keys:
            await self._ensure(key)
        own = self.subscriptions.setdefault(socket, {})
        texts = {}
        for key, depth in keys.items():
            old = own.get(key, "none")
            if old != depth:
                own[key] = depth
                self.watchers.setdefault(key, set()).add(socket)
            state = self.states.get(key)
            if state is None:
                continue  # dropped while loading (the link went down): the reload sends it
            text = state.snapshot(depth)
            if text is not None:
                texts[out_key(key, depth)] = text
        self._regroup(socket)
        if texts:
            await self._send(socket, texts)

    def unsubscribe(self, socket: Subscriber, keys: list[str]) -> None:
        for key in keys:
            self._unwatch(socket, key)
        self._regroup(socket)

    def _unwatch(self, socket: Subscriber, key: str) -> None:
        own = self.subscriptions.get(socket, {})
        own.pop(key, None)
        watchers = self.watchers.get(key)
        if watchers is not None:
            watchers.discard(socket)
            if not watchers:
                del self.watchers[key]
                self.states.pop(key, None)  # nobody here watches it: stop following it
            elif isinstance(state := self.states.get(key), BookState):
                depths = {self.subscriptions[s].get(key) or 0 for s in watchers}
                for depth in set(state.views) - depths:
                    del state.views[depth]

    def _regroup(self, socket: Subscriber) -> None:
        old = self.membership.pop(socket, None)
        if old is not None:
            members = self.groups.get(old)
            if members is not None:
                members.discard(socket)
                if not members:
                    del self.groups[old]
        own = self.subscriptions.get(socket)
        if own:
            outs = tuple(sorted(out_key(key, depth) for key, depth in own.items()))
            self.groups.setdefault(outs, set()).add(socket)
            self.membership[socket] = outs

    # -- channel state ----------------------------------------------------------------------
    async def _ensure(self, key: str) -> None:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = state_for(key)
            await self._load(state)
        else:
            await state.loaded.wait()

    async def _load(self, state: ChannelState) -> None:
        """Fetch a state, then apply what arrived meanwhile (stale messages drop out by
        their numbers)."""
        state.buffer = []
        state.loaded.clear()
        try:
            await state.fetch(self)
        except REDIS_ERRORS:
            logger.debug("hub: snapshot of %s unavailable", state.key, exc_info=True)
        finally:
            buffered, state.buffer = state.buffer or [], None
            out: Out = {}
            for text in buffered:
                if not state.follow(text, out):
                    break  # still behind: the next gap reloads it
            state.loaded.set()

    async def platform_status(self) -> dict:
        """The platform status the stream worker keeps in Redis, read at most once per
        STATUS_FRESH_S for all the process's sockets (their heartbeats ask for it)."""
        now = time.monotonic()
        if self.status_read is not None and now - self.status_read[0] < STATUS_FRESH_S:
            return self.status_read[1]
        try:
            async with asyncio.timeout(LINK_TIMEOUT_S):
                raw = await self.redis.get(selectors.status_key())
        except REDIS_ERRORS:
            status = {"stream": "down", "redis": "down"}
        else:
            # No status key: no stream worker has reported lately.
            status = {"stream": "up", **json.loads(raw)} if raw is not None else {"stream": "down"}
        self.status_read = (now, status)
        return status

    async def stored_snapshot(self, key: str) -> str | None:
        raw = await self.redis.hget(selectors.snapshot_key(), key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def _reload(self, state: ChannelState) -> None:
        """A gap: load the state again and bring its sockets level (a book's views send the
        difference; other kinds a snapshot)."""
        state.reloading = True
        if isinstance(state, LatestState):
            state.text = None  # fetched afresh
        try:
            await self._load(state)
            if self.states.get(state.key) is not state:
                return
            if isinstance(state, BookState):
                out: Out = {}
                state.refresh(out)
                if out:
                    await self._fan_out(out)
            else:
                text = state.snapshot(None)  # the same for every socket (no depth)
                if text is not None:
                    for socket in list(self.watchers.get(state.key, ())):
                        await self._send(socket, {state.key: text})
        finally:
            state.reloading = False

    # -- the subscription -------------------------------------------------------------------
    async def _read(self) -> None:
        listener = aioredis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        try:
            while True:
                try:
                    await self._listen(listener)
                except REDIS_ERRORS as error:
                    if self.connected:
                        logger.warning("hub: stream subscription lost (%s); retrying", error)
                    await self._link(False)
                    await asyncio.sleep(RECONNECT_S)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await listener.aclose()

    async def _listen(self, listener: aioredis.Redis) -> None:
        pubsub = listener.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(pubsub_channel())
            await self._link(True)
            while True:
                # Every flush already here is handled as one batch: a process that fell
                # behind catches up in one pass, not one fan-out per flush.
                payloads: list[str] = []
                message = await pubsub.get_message(timeout=None)
                while message is not None and len(payloads) < MAX_BATCH:
                    if message["type"] == "message":
                        data = message["data"]
                        payloads.append(data.decode() if isinstance(data, bytes) else data)
                    message = await pubsub.get_message(timeout=0)
                if message is not None and message["type"] == "message":
                    data = message["data"]
                    payloads.append(data.decode() if isinstance(data, bytes) else data)
                if payloads:
                    await self.on_flushes(payloads)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()

    async def _link(self, up: bool) -> None:
        self.tried.set()
        self.status_read = None
        if up == self.connected:
            return
        self.connected = up
        if up:
            self.linked.set()
        else:
            self.linked.clear()
        if up:
            # Whatever passed while the link was down is lost: every state loads again.
            for state in list(self.states.values()):
                asyncio.get_running_loop().create_task(self._reload(state))
        for socket in list(self.subscriptions):
            await socket.on_link(up)

    async def on_flushes(self, payloads: list[str]) -> None:
        """Flushes of the stream worker, in order: follow each watched channel, then fan out
        once."""
        out: Out = {}
        books: list[BookState] = []
        for payload in payloads:
            try:
                _at, items = payload_parse(payload)
            except ValueError:
                logger.error("hub: a flush that is not one (%.80r)", payload)
                continue
            for key, text in items.items():
                if key == STATUS_KEY:
                    await self._status(text)
                    continue
                state = self.states.get(key)
                if state is None:
                    continue  # nobody here watches it
                if state.buffer is not None:
                    state.buffer.append(text)
                    continue
                try:
                    followed = state.follow(text, out)
                except (ValueError, KeyError, TypeError, ArithmeticError):
                    logger.exception("hub: a message of %s could not be read", key)
                    followed = False
                if not followed and not state.reloading:
                    asyncio.get_running_loop().create_task(self._reload(state))
                elif isinstance(state, BookState) and state.dirty:
                    books.append(state)
        for book in books:
            if book.dirty:
                book.refresh(out)
        if out:
            await self._fan_out(out)

    async def _status(self, text: str) -> None:
        try:
            status = json.loads(text)
        except ValueError:
            return
        self.status = status
        for socket in list(self.subscriptions):
            await socket.on_status(status)

    async def _fan_out(self, out: Out) -> None:
        """Hand each group of sockets one frame of the messages it watches."""
        for outs, members in list(self.groups.items()):
            texts = [(key, text) for key in outs if key in out for text in out[key]]
            if not texts:
                continue
            frame = Frame('{"batch":[' + ",".join(text for _, text in texts) + "]}")
            sent = 0
            for socket in list(members):
                if await self._push(socket, frame):
                    sent += 1
            if sent:
                batch_sent(texts, sent)

    async def _push(self, socket: Subscriber, frame: Frame) -> bool:
        """Send a frame unless the socket's client is not reading; a socket that was behind
        gets fresh snapshots instead."""
        buffered = socket.buffered_bytes()
        if buffered is not None and buffered > SEND_BUFFER_LIMIT:
            self.lagging.add(socket)
            self.drops.inc()
            return False
        if socket in self.lagging:
            self.lagging.discard(socket)
            await self._resnapshot(socket)
            return False
        await socket.send_frame(frame)
        return True

    async def catch_up(self, socket: Subscriber) -> None:
        """A socket whose frames were skipped gets fresh snapshots once its client has read
        its buffer, even when no flush comes (the socket's heartbeat calls this)."""
        if socket in self.lagging:
            buffered = socket.buffered_bytes()
            if buffered is None or buffered <= SEND_BUFFER_LIMIT:
                self.lagging.discard(socket)
                await self._resnapshot(socket)

    async def _resnapshot(self, socket: Subscriber) -> None:
        texts = {}
        for key, depth in self.subscriptions.get(socket, {}).items():
            state = self.states.get(key)
            if state is not None and (text := state.snapshot(depth)) is not None:
                texts[key] = text
        if texts:
            await self._send(socket, texts)

    async def _send(self, socket: Subscriber, texts: dict[str, str]) -> None:
        await socket.send_frame(Frame('{"batch":[' + ",".join(texts.values()) + "]}"))
        batch_sent(list(texts.items()), 1)


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def hub() -> Hub:
    """This event loop's hub (one per web process; tests run a loop per test)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        for old in [old for old in _hubs if old.is_closed()]:
            del _hubs[old]
        found = _hubs[loop] = Hub()
    return found
