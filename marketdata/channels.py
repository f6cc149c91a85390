"""WebSocket channel names (docs/architecture.md §6) and the keys the stream travels under.

A client names public channels by symbol (`ticker.AAPL`, `book.AAPL`, `trades.AAPL`,
`candles.AAPL.1m`) and private ones by kind alone (`orders`, `balances`, `positions`): the
server maps a private channel to the socket's own account, so no client can name another's.
Inside the platform every stream message travels under a *key*: the public channel name, or
`orders.<account id>` for a private one (`private_key`); `parse` refuses such names from
clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from marketdata.candles import INTERVALS

PUBLIC_KINDS = frozenset({"ticker", "book", "trades", "candles"})
PRIVATE_KINDS = frozenset({"orders", "balances", "positions"})
# Chained kinds: an update applies only on top of the `seq` its `prev_seq` names.
CHAINED_KINDS = frozenset({"book", "trades", "orders"})
BOOK_DEPTHS = (1, 5, 10, 20, 50, 100)
DEFAULT_BOOK_DEPTH = 20
# The key of the platform status in a flush (never a channel a client can name).
STATUS_KEY = "@status"

_SYMBOL = r"[A-Z0-9][A-Z0-9._-]{0,31}"
_PUBLIC = re.compile(rf"(?P<kind>ticker|book|trades)\.(?P<symbol>{_SYMBOL})")
_CANDLES = re.compile(rf"candles\.(?P<symbol>{_SYMBOL})\.(?P<interval>[0-9a-z]{{1,4}})")
_KIND = re.compile(r"(?P<kind>[a-z]+)(\..*)?", re.DOTALL)


class UnknownChannel(ValueError):
    """A channel name that is malformed or names nothing we publish."""


class ForbiddenChannel(UnknownChannel):
    """A private channel the socket may not have: anonymous, or naming an account."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name: `kind`, and `symbol` (and `interval`) for public kinds."""

    kind: str
    symbol: str | None = None
    interval: str | None = None

    @property
    def name(self) -> str:
        if self.symbol is None:
            return self.kind
        if self.interval is not None:
            return f"candles.{self.symbol}.{self.interval}"
        return f"{self.kind}.{self.symbol}"

    @property
    def private(self) -> bool:
        return self.kind in PRIVATE_KINDS


def parse(channel: object) -> Channel:
    """Parse a client's channel name; raise UnknownChannel (ForbiddenChannel for a private
    channel with an account in it) when it names nothing a client may subscribe to."""
    if not isinstance(channel, str):
        raise UnknownChannel("channel names are strings")
    if channel in PRIVATE_KINDS:
        return Channel(channel)
    shown = channel[:64]
    if (match := _PUBLIC.fullmatch(channel)) is not None:
        return Channel(match["kind"], match["symbol"])
    if (match := _CANDLES.fullmatch(channel)) is not None:
        if match["interval"] not in INTERVALS:
            raise UnknownChannel(
                f"unknown interval in {shown!r}; use one of {', '.join(INTERVALS)}"
            )
        return Channel("candles", match["symbol"], match["interval"])
    kind = _KIND.fullmatch(channel)
    if kind is not None and kind["kind"] in PRIVATE_KINDS:
        raise ForbiddenChannel(
            f"{shown!r}: private channels name no account; subscribe to "
            f"{kind['kind']!r} for your own"
        )
    raise UnknownChannel(f"unknown channel {shown!r}")


def private_key(kind: str, account_id: int) -> str:
    """The key a private channel's messages travel under inside the platform."""
    return f"{kind}.{account_id}"


def key_kind(key: str) -> str:
    """The kind of a channel or key (`book.AAPL` -> `book`)."""
    return key.partition(".")[0]


def key_symbol(key: str) -> str:
    """The symbol of a public channel's key (`candles.AAPL.1m` -> `AAPL`)."""
    rest = key.partition(".")[2]
    return rest.rpartition(".")[0] if key.startswith("candles.") else rest


def pubsub_channel() -> str:
    """The one Redis pub/sub channel every flush of the stream worker goes out on."""
    return f"{settings.KAFKA_TOPIC_PREFIX}stream"
