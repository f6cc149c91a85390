"""`/ws/stream/`: the WebSocket protocol of docs/architecture.md §6.

One socket per tab. Its updates come from its process's hub (`marketdata.hub`): one Redis
subscription per process, frames built once per set of subscriptions, at most one frame per
flush of the stream worker, and a client that does not read gets fresh snapshots when it
does, never a queue. This module is the socket's side: the protocol's messages, its limits,
its heartbeat and what it says of the platform's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings

from accounts.selectors import account_for_user
from marketdata import selectors, socket_metrics
from marketdata.channels import (
    BOOK_DEPTHS,
    DEFAULT_BOOK_DEPTH,
    Channel,
    ForbiddenChannel,
    UnknownChannel,
    parse,
    private_key,
)
from marketdata.hub import REDIS_ERRORS, Frame, Hub, hub
from tredye.client_ip import scope_client_ip

logger = logging.getLogger(__name__)

CLOSE_IDLE = 4408
CLOSE_TOO_MANY_SOCKETS = 4429  # as HTTP 429; the client backs off and polls meanwhile
# Channels one subscribe or unsubscribe may name (more is refused whole): bounds the answers
# one message of WS_MAX_MESSAGE_BYTES can cause.
MAX_CHANNELS_PER_MESSAGE = 256
# A ping's id is echoed: a short string or a 64-bit integer.
MAX_PING_ID_CHARS = 64
SYMBOLS_TTL_S = 10.0
# A Redis call of a socket is cut short after this, so an unanswering Redis cannot hold it.
LAYER_TIMEOUT_S = 2.0
# After the stream is back, keep re-reading the status this long: the stream worker rewrites
# its status key within a second of Redis returning, and the page should go live at once.
SETTLE_S = 5.0
STATUS_RETRY_S = 1.0
_symbols_cache: tuple[float, frozenset[str]] = (0.0, frozenset())


@database_sync_to_async
def _active_symbols() -> frozenset[str]:
    return frozenset(selectors.active_symbols())


def _protocol_of(send: Any) -> tuple[Any, Any]:
    """(daphne's WebSocket protocol, its Twisted transport) under an ASGI `send`, or Nones.

    Daphne's `send` is `partial(server.handle_reply, protocol)`; Channels' session middleware
    wraps it in a method of an object that keeps it as `real_send`. The transport (unwrapped
    from any protocol wrapper) buffers what the kernel has not taken yet.
    """
    for _ in range(8):
        args = getattr(send, "args", None)
        if args:
            protocol = args[0]
            needed = ("sendPreparedMessage", "STATE_OPEN", "factory", "send_queue")
            if not all(hasattr(protocol, name) for name in needed):
                return None, None
            transport = getattr(protocol, "transport", None)
            for _ in range(4):
                if all(hasattr(transport, n) for n in ("dataBuffer", "offset", "_tempDataLen")):
                    return protocol, transport
                transport = getattr(transport, "transport", None)
            return None, None
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None, None
    return None, None


@database_sync_to_async
def _account_id(user: Any) -> int | None:
    account = account_for_user(user=user)
    return account.pk if account is not None else None


async def known_symbols() -> frozenset[str]:
    """Active symbols, cached for a few seconds so subscribing costs no query per message."""
    global _symbols_cache
    fetched_at, symbols = _symbols_cache
    if time.monotonic() - fetched_at > SYMBOLS_TTL_S:
        symbols = await _active_symbols()
        _symbols_cache = (time.monotonic(), symbols)
    return symbols


_limits_applied = {"yes": True}  # socket limits, as this process last could count; ditto

# Socket limits (WS_MAX_SOCKETS_PER_USER, WS_MAX_SOCKETS_PER_IP): a sorted set per user and per
# address in Redis, one member per open socket scored with the time its entry expires. A
# socket renews its entries on every heartbeat and removes them when it closes; those of a
# process that crashed expire on their own. Admission is one script, so two processes cannot
# both take the last slot; it uses Redis' clock, so the web hosts' clocks do not matter.
# KEYS: the sets; ARGV: member, ttl (s), then each set's limit (0: count only).
# Returns 0 when admitted, else the (1-based) index of the first set that is full.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local limit = tonumber(ARGV[2 + i])
  if limit > 0 and redis.call('ZCARD', key) >= limit then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(ttl) + 1)
end
return 0
"""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def forget_symbols() -> None:
    """Drop the cached symbol set, so the next subscribe reads it afresh."""
    global _symbols_cache
    _symbols_cache = (0.0, frozenset())


class _OncePerMinute(logging.Filter):
    """Let one record of a repeating message through per minute.

    channels-redis logs a traceback every second from each process while its Redis is away;
    one a minute says the same.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last.get(record.msg, -60.0) < 60.0:
            return False
        self.last[record.msg] = now
        return True


logging.getLogger("channels_redis.pubsub").addFilter(_OncePerMinute())


class StreamConsumer(AsyncWebsocketConsumer):
    """Subscribe, unsubscribe, ping/pong, frames from the hub, heartbeat and idle timeout.

    The socket outlives Redis: with Redis away it is accepted all the same, says
    `{"op": "status", "live": "down", ...}` so the page can fall back to polling, and the hub
    brings every channel back (fresh snapshots) as soon as Redis answers.
    """

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001 - ASGI
        # No channel layer: updates come from the process's hub, not a channel per socket.
        self.scope = scope
        self.base_send = send
        self.channel_layer = None
        self.channel_name = None
        self.counted_open = False  # in the connected-sockets gauge (socket_metrics)
        self.hub: Hub | None = None
        self._transport: Any = False  # not looked up yet
        self._protocol: Any = None
        try:
            with contextlib.suppress(StopConsumer):
                await await_many_dispatch([receive], self.dispatch)
        finally:
            self._uncount()  # an error or a cancel may end a socket without `disconnect`
            await self._leave_hub()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        if not self.counted_open:
            self.counted_open = True
            socket_metrics.socket_opened()

    def _uncount(self) -> None:
        if self.counted_open:
            self.counted_open = False
            socket_metrics.socket_closed()

    async def _leave_hub(self) -> None:
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.leave(self)

    async def connect(self) -> None:
        self.subscriptions: dict[str, str] = {}  # channel name -> its key (channels.py)
        self.last_heard = time.monotonic()
        self.hub = hub()
        self.redis = self.hub.redis  # the process's client: no connection of its own
        self.status_task: asyncio.Task | None = None
        self.status: dict = {}
        self.account_id: int | None = None
        self.socket_id = uuid.uuid4().hex
        self.socket_keys = self._socket_keys()
        await self.accept()
        refused = await self._admit()
        if refused is not None:
            kind, limit = refused
            await self._error(
                "too_many_sockets",
                f"at most {limit} open sockets per {kind}; close one and try again",
                limit=limit,
            )
            self.socket_keys = []  # counted nowhere: nothing to release
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.hub.join(self)
        await self.hub.wait_linked(LAYER_TIMEOUT_S)
        self.heartbeat_task = asyncio.create_task(self._heartbeat())
        await self._send_json(
            {
                "op": "welcome",
                "heartbeat_s": settings.WS_HEARTBEAT_INTERVAL_S,
                "idle_timeout_s": settings.WS_IDLE_TIMEOUT_S,
            }
        )
        await self._send_status(await self._current_status())

    async def dispatch(self, message: dict) -> None:
        # Channels' dispatch runs close_old_connections() through sync_to_async before every
        # message: a thread hop serialised across every socket of the process. This consumer
        # reaches the database only through database_sync_to_async, which closes stale
        # connections itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        self._uncount()
        if hasattr(self, "heartbeat_task"):
            self.heartbeat_task.cancel()
        status_task: asyncio.Task | None = getattr(self, "status_task", None)
        if status_task is not None:
            status_task.cancel()
        await self._leave_hub()
        if hasattr(self, "redis"):
            await self._release()

    # -- what the hub calls ---------------------------------------------------------------
    async def send_frame(self, frame: Frame) -> None:
        """Send a frame the hub built once for its group. Under daphne it goes straight to
        the socket's WebSocket protocol (the object the transport is found through) as a
        message prepared once for every socket (autobahn's `prepareMessage` /
        `sendPreparedMessage`), skipping the ASGI layers and the framing a frame would take
        500 times over; elsewhere, or once the socket is closing, through ASGI."""
        if self._transport is False:
            self._find_transport()
        protocol = self._protocol
        if protocol is not None and protocol.state == protocol.STATE_OPEN:
            prepared = frame.prepared
            if prepared is None:
                prepared = frame.prepared = protocol.factory.prepareMessage(frame.data)
            if protocol.send_queue:
                protocol.sendPreparedMessage(prepared)  # behind what autobahn has queued
            else:
                # What sendPreparedMessage does, without formatting a debug line per send
                # (autobahn builds its arguments even when debug is off): a complete frame,
                # written whole, so it never splits another.
                self._transport.write(prepared.payloadHybi)
            return
        await self.base_send({"type": "websocket.send", "text": frame.text})

    def _find_transport(self) -> None:
        self._protocol, self._transport = _protocol_of(self.base_send)

    def buffered_bytes(self) -> int | None:
        """Bytes waiting in this socket's send buffer, where the server lets us see them
        (daphne's Twisted transport); None elsewhere (then frames are never skipped)."""
        if self._transport is False:
            self._find_transport()
        transport = self._transport
        if transport is None:
            return None
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # noqa: SLF001

    async def on_status(self, status: dict) -> None:
        await self._send_status(self._with_layer({"stream": "up", **status}))

    async def on_link(self, up: bool) -> None:
        if not up:
            await self._send_status(self._with_layer(dict(self.status) or {"stream": "down"}))
        elif self.status_task is None or self.status_task.done():
            self.status_task = asyncio.create_task(self._settle())

    async def _settle(self) -> None:
        """Re-read the status until the stream worker says it is up again (it rewrites its
        status within a second of Redis returning)."""
        back_at = time.monotonic()
        while True:
            status = await self._current_status()
            await self._send_status(status)
            if status.get("stream") == "up" or time.monotonic() - back_at > SETTLE_S:
                return
            await asyncio.sleep(STATUS_RETRY_S)

    # -- sockets per user and per address ---------------------------------------------------
    def _socket_keys(self) -> list[tuple[str, int, str]]:
        """(Redis key, limit, what it counts) for each limit this socket falls under."""
        prefix = f"{settings.KAFKA_TOPIC_PREFIX}ws:sockets"
        keys = []
        user = self.scope.get("user")
        if settings.WS_MAX_SOCKETS_PER_USER > 0 and user is not None and user.is_authenticated:
            keys.append((f"{prefix}:user:{user.pk}", settings.WS_MAX_SOCKETS_PER_USER, "user"))
        address = scope_client_ip(self.scope)
        if settings.WS_MAX_SOCKETS_PER_IP > 0 and address:
            keys.append((f"{prefix}:ip:{address}", settings.WS_MAX_SOCKETS_PER_IP, "address"))
        return keys

    @staticmethod
    def _socket_ttl() -> int:
        """Seconds a socket's entry lives unless its heartbeat renews it."""
        return max(10, math.ceil(3 * settings.WS_HEARTBEAT_INTERVAL_S))

    async def _count_socket(self, *, enforce: bool) -> int:
        keys = [key for key, _limit, _kind in self.socket_keys]
        limits = [limit if enforce else 0 for _key, limit, _kind in self.socket_keys]
        async with asyncio.timeout(LAYER_TIMEOUT_S):
            return await self.redis.eval(
                _ADMIT, len(keys), *keys, self.socket_id, self._socket_ttl(), *limits
            )

    async def _admit(self) -> tuple[str, int] | None:
        """Count this socket; (what, limit) of the first limit it would exceed, else None.

        Redis away: the socket is let in uncounted (one log line per outage); its heartbeat
        counts it once Redis is back.
        """
        if not self.socket_keys:
            return None
        try:
            full = await self._count_socket(enforce=True)
        except REDIS_ERRORS as error:
            if _limits_applied["yes"]:
                _limits_applied["yes"] = False
                logger.warning(
                    "stream sockets: cannot count sockets in Redis (%s); socket limits are "
                    "not applied until it answers",
                    error,
                )
            return None
        if not _limits_applied["yes"]:
            _limits_applied["yes"] = True
            logger.info("stream sockets: Redis answers again; socket limits applied")
        if full:
            _key, limit, kind = self.socket_keys[full - 1]
            logger.info("stream sockets: refused a socket past %d per %s", limit, kind)
            return kind, limit
        return None

    async def _renew(self) -> None:
        """Push this socket's entries' expiry on (or count it, after Redis came back)."""
        if self.socket_keys:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._count_socket(enforce=False)

    async def _release(self) -> None:
        if getattr(self, "socket_keys", None):
            with contextlib.suppress(*REDIS_ERRORS):
                async with asyncio.timeout(LAYER_TIMEOUT_S):
                    for key, _limit, _kind in self.socket_keys:
                        await self.redis.zrem(key, self.socket_id)

    # -- client -> server -------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """One client message. Anything malformed is answered `{"op": "error", "code", ...}`
        and changes nothing; the socket stays open whatever it was sent."""
        self.last_heard = time.monotonic()
        try:
            await self._receive(text_data)
        except Exception:
            # A bug, not the client's fault: say so and keep the socket (never a 1011).
            logger.exception("stream sockets: message handling failed")
            await self._error("internal_error", "the message could not be handled")

    async def _receive(self, text_data: str | None) -> None:
        if text_data is None:
            return await self._error("bad_request", "send JSON text frames, not binary")
        if (
            len(text_data) > settings.WS_MAX_MESSAGE_BYTES
            or len(text_data.encode("utf-8", "surrogatepass")) > settings.WS_MAX_MESSAGE_BYTES
        ):
            return await self._error("too_large", "message too large")
        try:
            message = json.loads(text_data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            # ValueError: not JSON, NaN or Infinity, an integer of too many digits;
            # RecursionError: nested deeper than the parser goes.
            return await self._error("bad_json", "message is not valid JSON")
        if not isinstance(message, dict):
            return await self._error("bad_request", "message must be a JSON object")
        op = message.get("op")
        if not isinstance(op, str):
            return await self._error("bad_request", "op must be a string")
        if op == "subscribe":
            return await self._subscribe(message)
        if op == "unsubscribe":
            return await self._unsubscribe(message)
        if op == "ping":
            return await self._ping(message)
        if op == "heartbeat":
            return None  # the client's answer to our heartbeat; hearing it is enough
        return await self._error("unknown_op", f"unknown op {op[:32]!r}")

    async def _ping(self, message: dict) -> None:
        ping_id = message.get("id")
        if not (
            ping_id is None
            or (isinstance(ping_id, str) and len(ping_id) <= MAX_PING_ID_CHARS)
            or (type(ping_id) is int and -(2**63) <= ping_id < 2**63)
        ):
            return await self._error(
                "bad_request",
                f"id must be a string of at most {MAX_PING_ID_CHARS} characters or an integer",
            )
        await self._send_json({"op": "pong", "id": ping_id})

    def _channel_list(self, message: dict, *, allow_empty: bool) -> list[Any] | str:
        """The message's `channels` (a list; its items are checked one by one), or what is
        wrong with it."""
        channels = message.get("channels")
        if not isinstance(channels, list) or (not channels and not allow_empty):
            return "channels must be a " + ("list" if allow_empty else "non-empty list")
        if len(channels) > max(MAX_CHANNELS_PER_MESSAGE, settings.WS_MAX_SUBSCRIPTIONS):
            limit = max(MAX_CHANNELS_PER_MESSAGE, settings.WS_MAX_SUBSCRIPTIONS)
            return f"at most {limit} channels per message"
        return channels

    async def _subscribe(self, message: dict) -> None:
        channels = self._channel_list(message, allow_empty=False)
        if isinstance(channels, str):
            return await self._error("bad_request", channels)
        depth = message.get("depth", DEFAULT_BOOK_DEPTH)
        if type(depth) is not int or depth not in BOOK_DEPTHS:
            return await self._error(
                "bad_request", f"depth must be one of {', '.join(map(str, BOOK_DEPTHS))}"
            )
        symbols = await known_symbols()
        keys: dict[str, int | None] = {}
        accepted = []
        for channel in channels:
            shown = channel[:64] if isinstance(channel, str) else f"<{type(channel).__name__}>"
            try:
                parsed = parse(channel)
                if parsed.symbol is not None and parsed.symbol not in symbols:
                    raise UnknownChannel(f"unknown symbol in {shown!r}")
                key = await self._key(parsed)
            except ForbiddenChannel as error:
                await self._error("forbidden", str(error), channel=shown)
                continue
            except UnknownChannel as error:
                await self._error("unknown_channel", str(error), channel=shown)
                continue
            if channel not in self.subscriptions and (
                len(self.subscriptions) >= settings.WS_MAX_SUBSCRIPTIONS
            ):
                await self._error(
                    "too_many_subscriptions",
                    f"at most {settings.WS_MAX_SUBSCRIPTIONS} channels per socket",
                    channel=channel,
                )
                continue
            self.subscriptions[channel] = key
            keys[key] = depth if parsed.kind == "book" else None
            accepted.append(channel)
        if accepted:
            await self._send_json({"op": "subscribed", "channels": accepted})
            if self.hub is not None:
                await self.hub.subscribe(self, keys)

    async def _key(self, channel: Channel) -> str:
        """The key a channel's messages travel under for this socket: its own account's, for
        a private channel (an anonymous socket has none: ForbiddenChannel)."""
        if not channel.private:
            return channel.name
        if self.account_id is None:
            user = self.scope.get("user")
            if user is None or not user.is_authenticated:
                raise ForbiddenChannel(f"{channel.name!r} needs a signed-in user")
            self.account_id = await _account_id(user)
            if self.account_id is None:
                raise ForbiddenChannel(f"{channel.name!r}: this user has no trading account")
        return private_key(channel.kind, self.account_id)

    async def _unsubscribe(self, message: dict) -> None:
        channels = self._channel_list(message, allow_empty=True)
        if isinstance(channels, str):
            return await self._error("bad_request", channels)
        if not all(isinstance(channel, str) for channel in channels):
            return await self._error("bad_request", "channel names are strings")
        removed = [channel for channel in channels if channel in self.subscriptions]
        keys = [self.subscriptions.pop(channel) for channel in removed]
        if keys and self.hub is not None:
            self.hub.unsubscribe(self, keys)
        await self._send_json({"op": "unsubscribed", "channels": removed})

    async def _current_status(self) -> dict:
        """The platform status for the client; `live: down` while this process has no
        subscription to the stream, so updates cannot reach it and the page should poll."""
        status = await self.hub.platform_status() if self.hub is not None else {"stream": "down"}
        return self._with_layer(status)

    def _with_layer(self, status: dict) -> dict:
        live = self.hub is not None and self.hub.connected
        return (
            {k: v for k, v in status.items() if k != "live"}
            if live
            else {
                **status,
                "live": "down",
            }
        )

    async def _send_status(self, status: dict) -> None:
        """Tell the client how the platform is doing, when that differs from what it knows."""
        if status != self.status:
            self.status = status
            await self._send_json({"op": "status", **status})

    async def _heartbeat(self) -> None:
        interval = settings.WS_HEARTBEAT_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_heard > settings.WS_IDLE_TIMEOUT_S:
                await self._error("idle_timeout", "no message from the client; closing")
                await self.close(code=CLOSE_IDLE)
                return
            await self._send_json({"op": "heartbeat", "ts": time.time_ns() // 1_000_000})
            if self.hub is not None:
                await self.hub.catch_up(self)
            await self._renew()
            # A stream worker that stopped reporting has let its status expire, or Redis has
            # gone: say so.
            await self._send_status(await self._current_status())

    async def _error(self, code: str, detail: str, **extra: object) -> None:
        await self._send_json({"op": "error", "code": code, "detail": detail, **extra})

    async def _send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))
        socket_metrics.control_sent(payload["op"])
