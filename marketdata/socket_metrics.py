"""What a `/ws/stream/` socket counts into /metrics (the objects of `tredye.metrics`).

Cheap per frame: the labelled children are looked up once per channel or op and kept, and a
message's event time is read from the start of its JSON text (`{"ch":..,"seq":..,"ts":..`, as
the broadcaster writes it), never by parsing the message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tredye.metrics import (
    WS_CONNECTED_SOCKETS,
    WS_FRAMES_SENT,
    WS_MESSAGE_LATENCY,
    WS_MESSAGES_SENT,
)

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

# The top-level `ts` (epoch ms) comes right after `ch` and `seq`: look no further than this.
TS_WITHIN_CHARS = 160
_TS = re.compile(r'"ts":\s*(\d+)')

# channel -> (messages counter, latency histogram) of its kind; bounded by the channels
# sockets may subscribe (kinds x active symbols).
_by_channel: dict[str, tuple[Counter, Histogram]] = {}
# op (welcome, status, heartbeat, error, pong, subscribed, unsubscribed) -> messages counter
_by_op: dict[str, Counter] = {}


def _channel_children(channel: str) -> tuple[Counter, Histogram]:
    kind = channel.partition(".")[0]
    children = (WS_MESSAGES_SENT.labels(kind), WS_MESSAGE_LATENCY.labels(kind))
    _by_channel[channel] = children
    return children


def socket_opened() -> None:
    WS_CONNECTED_SOCKETS.inc()


def socket_closed() -> None:
    WS_CONNECTED_SOCKETS.dec()


def batch_sent(texts: Iterable[tuple[str, str]], sockets: int = 1) -> None:
    """One batch frame sent to each of `sockets` sockets: `texts` are its messages' (key,
    JSON text). Frames and messages count once per socket; the latency from each message's
    event time to now is observed once per frame built (sockets that share a frame get it
    within the same loop pass)."""
    WS_FRAMES_SENT.inc(sockets)
    now_ms = time.time() * 1000
    for key, text in texts:
        messages, latency = _by_channel.get(key) or _channel_children(key)
        messages.inc(sockets)
        match = _TS.search(text, 0, TS_WITHIN_CHARS)
        if match is not None:
            # Another host's clock may run ahead of this one: never a negative latency.
            latency.observe(max(0.0, now_ms - int(match[1])) / 1000)


def control_sent(op: str) -> None:
    """One frame of one control message (status, heartbeat, error, ...) sent; these carry
    no event time of their own (a heartbeat's `ts` is its send time)."""
    counter = _by_op.get(op)
    if counter is None:
        counter = _by_op[op] = WS_MESSAGES_SENT.labels(op)
    WS_FRAMES_SENT.inc()
    counter.inc()
