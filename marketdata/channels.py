"""WebSocket channel names (`ticker.AAPL`) and the channel-layer groups behind them."""

from __future__ import annotations

import re

# Kinds a client may subscribe to today; `trades`, `book` and the private channels join later.
PUBLIC_KINDS = frozenset({"ticker"})
STATUS_GROUP = "status"

_CHANNEL = re.compile(r"(?P<kind>[a-z]+)\.(?P<symbol>[A-Z0-9][A-Z0-9._-]{0,31})")


class UnknownChannel(ValueError):
    """A channel name that is malformed or names nothing we publish."""


def parse(channel: object) -> tuple[str, str]:
    """Split `ticker.AAPL` into ("ticker", "AAPL"); raise UnknownChannel when malformed."""
    if not isinstance(channel, str):
        raise UnknownChannel("channel names are strings")
    match = _CHANNEL.fullmatch(channel)
    if match is None or match["kind"] not in PUBLIC_KINDS:
        raise UnknownChannel(f"unknown channel {channel[:64]!r}")
    return match["kind"], match["symbol"]


# Kinds whose updates travel together: one channel-layer message per flush carries every
# symbol's update, so a socket watching many tickers is woken once per flush, not once per
# symbol (see docs/decisions/0002-pubsub-channel-layer.md).
SHARED_GROUP_KINDS = frozenset({"ticker"})


def group_name(channel: str) -> str:
    """The channel-layer group that carries one WebSocket channel."""
    kind = channel.partition(".")[0]
    return f"md.{kind}" if kind in SHARED_GROUP_KINDS else f"md.{channel}"
