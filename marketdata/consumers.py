"""`/ws/stream/`: the WebSocket protocol of docs/architecture.md §6.

One socket per tab. Messages from the channel layer are conflated per channel (latest wins)
and sent as `{"batch": [...]}` frames at most once per flush interval, so a slow client holds
at most one pending message per subscribed channel, never an unbounded queue.
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

import redis.asyncio as aioredis
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from marketdata import selectors, socket_metrics
from marketdata.channels import STATUS_GROUP, UnknownChannel, group_name, parse
from tredye.client_ip import scope_client_ip

logger = logging.getLogger(__name__)

CLOSE_IDLE = 4408
CLOSE_TOO_MANY_SOCKETS = 4429  # as HTTP 429; the client backs off and polls meanwhile
# Channels one subscribe or unsubscribe may name (more is refused whole): bounds the answers
# one message of WS_MAX_MESSAGE_BYTES can cause.
MAX_CHANNELS_PER_MESSAGE = 256
# A ping's id is echoed: a short string or a 64-bit integer.
MAX_PING_ID_CHARS = 64
# A stream message older than this means the process is behind: conflate for a while.
BEHIND_AFTER_S = 0.05
BEHIND_FLUSH_S = 0.1
SYMBOLS_TTL_S = 10.0
# While the channel layer's Redis is away, a socket tries to rejoin it this often; each try is
# cut short after LAYER_TIMEOUT_S so an unanswering Redis cannot hold a socket.
LAYER_RETRY_S = 1.0
LAYER_TIMEOUT_S = 2.0
# After the layer is back, keep re-reading the status this long: the stream worker rewrites
# its status key within a second of Redis returning, and the page should go live at once.
SETTLE_S = 5.0
REDIS_ERRORS = (OSError, TimeoutError, aioredis.RedisError)
_symbols_cache: tuple[float, frozenset[str]] = (0.0, frozenset())


@database_sync_to_async
def _active_symbols() -> frozenset[str]:
    return frozenset(selectors.active_symbols())


async def known_symbols() -> frozenset[str]:
    """Active symbols, cached for a few seconds so subscribing costs no query per message."""
    global _symbols_cache
    fetched_at, symbols = _symbols_cache
    if time.monotonic() - fetched_at > SYMBOLS_TTL_S:
        symbols = await _active_symbols()
        _symbols_cache = (time.monotonic(), symbols)
    return symbols


_layer_reachable = {"up": True}  # as this process last saw it; for logging once
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
_fastest = {"offset": float("inf"), "seen": 0.0}


def _lag(sent_at: float) -> float:
    """How far this process is behind the stream, from the worker's send time.

    Measured against the smallest send-to-receive offset seen here, so a clock difference
    between the worker's host and this one cancels out; the baseline creeps up by 1 ms a
    second so clock drift cannot leave it stale.
    """
    now = time.time()
    offset = now - sent_at
    baseline = _fastest["offset"] + (now - _fastest["seen"]) * 0.001
    if offset <= baseline:
        _fastest["offset"], _fastest["seen"] = offset, now
        return 0.0
    return offset - baseline


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def forget_symbols() -> None:
    """Drop the cached symbol set, so the next subscribe reads it afresh."""
    global _symbols_cache
    _symbols_cache = (0.0, frozenset())


def layer_redis_url() -> str:
    """The Redis URL of the default channel layer (CHANNEL_LAYER_REDIS_URL)."""
    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    return host if isinstance(host, str) else host["address"]


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
    """Subscribe, unsubscribe, ping/pong, batched frames, heartbeat and idle timeout.

    The socket outlives its channel layer: with Redis away it is accepted all the same, says
    `{"op": "status", "live": "down", ...}` so the page can fall back to polling, and joins
    the layer (a channel, then its groups again) as soon as Redis answers.
    """

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001 - ASGI
        # AsyncConsumer.__call__ asks the layer for a channel before the socket is even
        # accepted; with Redis away that raised and the socket died with 1011. Here the socket
        # starts without a channel and `_join_layer` gets one when it can.
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name: str | None = None
        self.has_channel = asyncio.Event()
        self.layer_up = False
        self.counted_open = False  # in the connected-sockets gauge (socket_metrics)
        try:
            with contextlib.suppress(StopConsumer):
                await await_many_dispatch([receive, self._channel_receive], self.dispatch)
        finally:
            self._uncount()  # an error or a cancel may end a socket without `disconnect`

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        if not self.counted_open:
            self.counted_open = True
            socket_metrics.socket_opened()

    def _uncount(self) -> None:
        if self.counted_open:
            self.counted_open = False
            socket_metrics.socket_closed()

    async def _channel_receive(self) -> dict:
        await self.has_channel.wait()
        return await self.channel_layer.receive(self.channel_name)

    async def connect(self) -> None:
        self.subscriptions: set[str] = set()
        self.pending: dict[str, str] = {}  # channel -> the JSON text of its latest message
        self.flush_handle: asyncio.TimerHandle | None = None
        self.last_sent = 0.0
        self.flush_interval = settings.STREAM_FLUSH_INTERVAL_MS / 1000
        self.last_heard = time.monotonic()
        self.redis = aioredis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        self.layer_redis = (
            self.redis
            if layer_redis_url() == settings.REDIS_URL
            else aioredis.from_url(layer_redis_url(), socket_timeout=2, socket_connect_timeout=2)
        )
        self.rejoin_task: asyncio.Task | None = None
        self.status: dict = {}
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
        await self._join_layer()
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
        # message: a thread hop serialised across every socket of the process, which at 20
        # sockets already queued updates for seconds. This consumer reaches the database
        # only through database_sync_to_async, which closes stale connections itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        self._uncount()
        if hasattr(self, "heartbeat_task"):
            self.heartbeat_task.cancel()
        # A socket refused before `connect` set them up has neither.
        rejoin_task: asyncio.Task | None = getattr(self, "rejoin_task", None)
        if rejoin_task is not None:
            rejoin_task.cancel()
        flush_handle: asyncio.TimerHandle | None = getattr(self, "flush_handle", None)
        if flush_handle is not None:
            flush_handle.cancel()
        if self.channel_name is not None:
            try:
                for group in self._groups():
                    await self.channel_layer.group_discard(group, self.channel_name)
            except REDIS_ERRORS:
                pass  # Redis away: its subscriptions went with it
        if hasattr(self, "redis"):
            await self._release()
            await self.redis.aclose()
            if self.layer_redis is not self.redis:
                await self.layer_redis.aclose()

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

    # -- the channel layer ------------------------------------------------------------------
    def _groups(self) -> set[str]:
        channels = getattr(self, "subscriptions", ())
        return {STATUS_GROUP} | {group_name(channel) for channel in channels}

    async def _join_layer(self) -> bool:
        """Get a channel if this socket has none, and (re)join every group it belongs to.

        A Redis restart loses the subscriptions behind groups joined while it was away, so
        joining again is how a socket comes back; joining a group twice costs nothing.
        Returns False, and starts retrying every LAYER_RETRY_S, when Redis cannot be reached.
        """
        try:
            async with asyncio.timeout(LAYER_TIMEOUT_S):
                # Ask Redis first: a failed new_channel() leaves a queue behind in the layer.
                await self.layer_redis.ping()
                if self.channel_name is None:
                    self.channel_name = await self.channel_layer.new_channel()
                    self.has_channel.set()
                for group in self._groups():
                    await self.channel_layer.group_add(group, self.channel_name)
        except REDIS_ERRORS as error:
            self._layer_lost(error)
            return False
        self.layer_up = True
        if not _layer_reachable["up"]:
            _layer_reachable["up"] = True
            logger.info("stream sockets: channel layer back; sockets rejoin their groups")
        return True

    def _layer_lost(self, error: BaseException | None = None) -> None:
        self.layer_up = False
        if _layer_reachable["up"]:
            _layer_reachable["up"] = False  # one line per process, not one per socket
            logger.warning(
                "stream sockets: channel layer unreachable (%s); sockets stay open, say "
                "live: down and retry every %.0f s",
                error or "Redis unreachable",
                LAYER_RETRY_S,
            )
        self._rejoin_later()

    def _rejoin_later(self) -> None:
        if self.rejoin_task is None or self.rejoin_task.done():
            self.rejoin_task = asyncio.create_task(self._rejoin())

    async def _rejoin(self) -> None:
        """Retry the layer until it answers, then re-read the status until it is all up."""
        back_at = None
        while True:
            await asyncio.sleep(LAYER_RETRY_S)
            if not self.layer_up and not await self._join_layer():
                continue
            back_at = back_at or time.monotonic()
            status = await self._current_status()
            await self._send_status(status)
            if status.get("stream") == "up" or time.monotonic() - back_at > SETTLE_S:
                return

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
        symbols = await known_symbols()
        accepted = []
        for channel in channels:
            try:
                kind, symbol = parse(channel)
                if channel != f"{kind}.{symbol}":  # parse's `$` lets a trailing newline by
                    raise UnknownChannel(f"unknown channel {channel[:64]!r}")
                if symbol not in symbols:
                    raise UnknownChannel(f"unknown symbol in {channel!r}")
            except UnknownChannel as error:
                shown = channel[:64] if isinstance(channel, str) else f"<{type(channel).__name__}>"
                await self._error("unknown_channel", str(error), channel=shown)
                continue
            if channel in self.subscriptions:
                accepted.append(channel)
                continue
            if len(self.subscriptions) >= settings.WS_MAX_SUBSCRIPTIONS:
                await self._error(
                    "too_many_subscriptions",
                    f"at most {settings.WS_MAX_SUBSCRIPTIONS} channels per socket",
                    channel=channel,
                )
                continue
            self.subscriptions.add(channel)
            await self._group_add(group_name(channel))
            accepted.append(channel)
        if accepted:
            await self._send_json({"op": "subscribed", "channels": accepted})
            await self._send_snapshots(accepted)

    async def _unsubscribe(self, message: dict) -> None:
        channels = self._channel_list(message, allow_empty=True)
        if isinstance(channels, str):
            return await self._error("bad_request", channels)
        if not all(isinstance(channel, str) for channel in channels):
            return await self._error("bad_request", "channel names are strings")
        removed = []
        for channel in channels:
            if isinstance(channel, str) and channel in self.subscriptions:
                self.subscriptions.discard(channel)
                self.pending.pop(channel, None)
                removed.append(channel)
                group = group_name(channel)
                if self.channel_name is not None and not any(
                    group_name(other) == group for other in self.subscriptions
                ):
                    # With Redis away nothing is delivered to the group anyway.
                    with contextlib.suppress(*REDIS_ERRORS):
                        await self.channel_layer.group_discard(group, self.channel_name)
        await self._send_json({"op": "unsubscribed", "channels": removed})

    async def _group_add(self, group: str) -> None:
        """Join a group now, or when the layer is back (`_join_layer` joins every group)."""
        if not self.layer_up:
            return
        try:
            async with asyncio.timeout(LAYER_TIMEOUT_S):
                await self.channel_layer.group_add(group, self.channel_name)
        except REDIS_ERRORS as error:
            self._layer_lost(error)
            await self._send_status(await self._current_status())

    async def _send_snapshots(self, channels: list[str]) -> None:
        """Start each new subscription with the latest message the stream worker kept."""
        try:
            raw = await self.redis.hmget(selectors.snapshot_key(), channels)
        except (OSError, aioredis.RedisError):
            return  # no snapshot cache: live updates still arrive
        for channel, message in zip(channels, raw, strict=True):
            if message is not None:
                self.pending[channel] = message.decode() if isinstance(message, bytes) else message
        if self.pending:
            await self._flush_or_schedule()

    async def _current_status(self) -> dict:
        """The platform status for the client; `live: down` when this socket has no channel
        layer, so updates cannot reach it and the page should poll instead."""
        try:
            raw = await self.redis.get(selectors.status_key())
        except REDIS_ERRORS:
            status = {"stream": "down", "redis": "down"}
            if self.layer_redis is self.redis and self.layer_up:
                self._layer_lost()  # the same Redis: the layer went with it
        else:
            # No status key: no stream worker has reported lately.
            status = {"stream": "up", **json.loads(raw)} if raw is not None else {"stream": "down"}
        return self._with_layer(status)

    def _with_layer(self, status: dict) -> dict:
        return status if self.layer_up else {**status, "live": "down"}

    # -- channel layer -> client ------------------------------------------------------------
    async def stream_batch(self, event: dict) -> None:
        """Updates from the stream worker: `messages` maps channel -> message as JSON text."""
        subscriptions = self.subscriptions
        for channel, text in event["messages"].items():
            if channel in subscriptions:
                self.pending[channel] = text  # latest wins: bounded by the subscriptions
        if self.pending:
            behind = "at" in event and _lag(event["at"]) > BEHIND_AFTER_S
            await self._flush_or_schedule(at_least=BEHIND_FLUSH_S if behind else 0.0)

    async def status_message(self, event: dict) -> None:
        await self._send_status(self._with_layer({"stream": "up", **event["status"]}))

    async def _send_status(self, status: dict) -> None:
        """Tell the client how the platform is doing, when that differs from what it knows."""
        if status != self.status:
            self.status = status
            await self._send_json({"op": "status", **status})

    async def _flush_or_schedule(self, at_least: float = 0.0) -> None:
        """Send pending updates now if the last frame is a flush interval old, else later.

        `at_least` delays the frame when this process has fallen behind the stream: the
        backlog then merges into one frame of the latest values instead of one frame each.
        """
        if self.flush_handle is not None:
            return  # a flush is already due; it will carry these too
        delay = max(self.last_sent + self.flush_interval - time.monotonic(), at_least)
        if delay <= 0:
            await self._flush()  # the usual case: no timer, no task
        else:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(delay, lambda: asyncio.ensure_future(self._flush()))

    async def _flush(self) -> None:
        self.flush_handle = None
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        self.last_sent = time.monotonic()
        await self.send(text_data='{"batch":[' + ",".join(pending.values()) + "]}")
        socket_metrics.batch_sent(pending)

    async def _heartbeat(self) -> None:
        interval = settings.WS_HEARTBEAT_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_heard > settings.WS_IDLE_TIMEOUT_S:
                await self._error("idle_timeout", "no message from the client; closing")
                await self.close(code=CLOSE_IDLE)
                return
            await self._send_json({"op": "heartbeat", "ts": time.time_ns() // 1_000_000})
            await self._renew()
            # A stream worker that stopped reporting has let its status expire, or Redis has
            # gone: say so.
            if self.layer_up and self.layer_redis is not self.redis:
                await self._check_layer()
            await self._send_status(await self._current_status())

    async def _check_layer(self) -> None:
        """Notice a channel-layer Redis (apart from REDIS_URL) that has gone away."""
        try:
            async with asyncio.timeout(LAYER_TIMEOUT_S):
                await self.layer_redis.ping()
        except REDIS_ERRORS as error:
            self._layer_lost(error)

    async def _error(self, code: str, detail: str, **extra: object) -> None:
        await self._send_json({"op": "error", "code": code, "detail": detail, **extra})

    async def _send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))
        socket_metrics.control_sent(payload["op"])
