"""Events emitted by the order book: frozen, slotted dataclasses.

Constructing a frozen dataclass through its ``__init__`` costs one ``object.__setattr__`` call
per field, which would dominate the engine's hot path. So each event class is made by
``_event``: a frozen dataclass whose fields are the slots of a private, mutable base class.
The engine creates an instance of the base (``builder_for(cls)``), sets the fields with plain
attribute stores, then assigns ``instance.__class__ = cls``. The result is an ordinary
instance of the frozen dataclass, equal to one built through its constructor, with no
``__dict__``; ``tests/test_events.py`` checks this for every event class."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from trading.engine.types import Side

_T = TypeVar("_T")


def _setstate(self: Any, state: Any) -> None:
    # pickle support: a frozen dataclass refuses setattr, so restore slots directly
    for name, value in state[1].items():
        object.__setattr__(self, name, value)


def _event(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a frozen dataclass whose fields live in the slots of a plain base class.

    The base class (``cls.__mro__[1]``) is mutable, so the engine builds an instance of it,
    sets the fields with plain attribute stores, and then assigns ``__class__ = cls``; with
    the slots in a shared base, that switch needs no layout comparison (see ``builder_for``).
    Instances have no ``__dict__``, compare and hash like any frozen dataclass.
    """
    names = tuple(cls.__annotations__)
    base = type(
        f"_{cls.__name__}Slots",
        (),
        {"__slots__": names, "__module__": cls.__module__, "__setstate__": _setstate},
    )
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    namespace["__slots__"] = ()
    frozen: type = dataclass(frozen=True)(type(cls.__name__, (base,), namespace))
    for name in names:  # defaults now live in __init__; the slots must show through
        if name in frozen.__dict__:
            delattr(frozen, name)
    return frozen


@_event
class Accepted:
    """The order is live: resting, pending as a stop, or about to match."""

    order_id: int


@_event
class Rejected:
    """The command was refused; the book did not change."""

    order_id: int
    reason: str


@_event
class Trade:
    """A fill at the maker's price. ``*_remaining`` is each order's open quantity after it."""

    maker_order_id: int
    taker_order_id: int
    price: int
    qty: int
    aggressor_side: Side
    maker_account_id: int
    taker_account_id: int
    maker_remaining: int
    taker_remaining: int
    seq: int  # per-book trade number, 1, 2, 3, ...
    ts: int


@_event
class Canceled:
    """``qty`` was cancelled; ``remaining`` is still open (0 when the order is gone)."""

    order_id: int
    qty: int
    remaining: int
    reason: str


@_event
class Expired:
    """A DAY order's open ``qty`` expired; the order is gone."""

    order_id: int
    qty: int


@_event
class Triggered:
    """A pending stop order was triggered and now runs as a market or limit order."""

    order_id: int


@_event
class Replaced:
    """A live order now has open quantity ``qty`` and limit price ``price``.

    ``old_qty`` and ``old_price`` are the values before the replace; ``stop_price`` is the
    trigger price of a pending stop (``None`` for a resting order).
    """

    order_id: int
    qty: int
    price: int | None
    old_qty: int
    old_price: int | None
    stop_price: int | None = None


@_event
class BookDelta:
    """The level ``price`` on ``side`` now holds ``qty`` in total; 0 means it is gone."""

    side: Side
    price: int
    qty: int


Event = Accepted | Rejected | Trade | Canceled | Expired | Triggered | Replaced | BookDelta
EVENT_CLASSES: tuple[type, ...] = (
    Accepted,
    Rejected,
    Trade,
    Canceled,
    Expired,
    Triggered,
    Replaced,
    BookDelta,
)


def builder_for(cls: type) -> type:
    """Return a mutable class with the slot layout of the frozen dataclass ``cls``.

    Set every field on an instance, then assign ``instance.__class__ = cls``. For an event
    class that is its slotted base; for a ``slots=True`` dataclass (``Order``) it is a twin
    class with the same slots, which costs a layout comparison on each switch.
    """
    names = tuple(f.name for f in fields(cls))
    if cls.__dict__.get("__slots__") == names:
        return type(f"_{cls.__name__}Builder", (), {"__slots__": names})
    base = cls.__mro__[1]
    if base.__dict__.get("__slots__") != names:
        raise TypeError(f"{cls.__name__} is not a slotted frozen dataclass")
    return base


AcceptedBuilder = builder_for(Accepted)
RejectedBuilder = builder_for(Rejected)
TradeBuilder = builder_for(Trade)
CanceledBuilder = builder_for(Canceled)
ExpiredBuilder = builder_for(Expired)
TriggeredBuilder = builder_for(Triggered)
ReplacedBuilder = builder_for(Replaced)
BookDeltaBuilder = builder_for(BookDelta)


def accepted(order_id: int) -> Accepted:
    event = AcceptedBuilder()
    event.order_id = order_id
    event.__class__ = Accepted
    return event


def rejected(order_id: int, reason: str) -> Rejected:
    event = RejectedBuilder()
    event.order_id = order_id
    event.reason = reason
    event.__class__ = Rejected
    return event


def canceled(order_id: int, qty: int, remaining: int, reason: str) -> Canceled:
    event = CanceledBuilder()
    event.order_id = order_id
    event.qty = qty
    event.remaining = remaining
    event.reason = reason
    event.__class__ = Canceled
    return event


def expired(order_id: int, qty: int) -> Expired:
    event = ExpiredBuilder()
    event.order_id = order_id
    event.qty = qty
    event.__class__ = Expired
    return event


def triggered(order_id: int) -> Triggered:
    event = TriggeredBuilder()
    event.order_id = order_id
    event.__class__ = Triggered
    return event


def book_delta(side: Side, price: int, qty: int) -> BookDelta:
    event = BookDeltaBuilder()
    event.side = side
    event.price = price
    event.qty = qty
    event.__class__ = BookDelta
    return event


def replaced(
    order_id: int,
    qty: int,
    price: int | None,
    old_qty: int,
    old_price: int | None,
    stop_price: int | None = None,
) -> Replaced:
    event = ReplacedBuilder()
    event.order_id = order_id
    event.qty = qty
    event.price = price
    event.old_qty = old_qty
    event.old_price = old_price
    event.stop_price = stop_price
    event.__class__ = Replaced
    return event
