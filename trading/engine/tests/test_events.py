"""Events are frozen, slotted dataclasses, and the fast builders make ordinary instances."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from trading.engine import Order, OrderBook, Side, events
from trading.engine.events import EVENT_CLASSES

from .helpers import BUY, SELL, limit, market


@pytest.mark.parametrize("cls", [*EVENT_CLASSES, Order])
def test_event_and_order_classes_are_frozen_slotted_dataclasses(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    names = tuple(f.name for f in dataclasses.fields(cls))
    # every field is a slot, of the class itself or (events) of its private base class
    slots = tuple(name for klass in cls.__mro__ for name in klass.__dict__.get("__slots__", ()))
    assert slots == names
    instance = cls(*range(1, len(names) + 1))
    assert not hasattr(instance, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        instance.__setattr__(dataclasses.fields(cls)[0].name, 99)


def test_fast_factories_build_instances_equal_to_the_constructor() -> None:
    built = [
        events.accepted(1),
        events.rejected(1, "invalid_qty"),
        events.canceled(1, 2, 3, "user"),
        events.expired(1, 2),
        events.triggered(1),
        events.book_delta(Side.BUY, 100, 5),
        events.replaced(1, 2, 3, 4, 5, 6),
    ]
    expected = [
        events.Accepted(1),
        events.Rejected(1, "invalid_qty"),
        events.Canceled(1, 2, 3, "user"),
        events.Expired(1, 2),
        events.Triggered(1),
        events.BookDelta(Side.BUY, 100, 5),
        events.Replaced(1, 2, 3, 4, 5, 6),
    ]
    for fast, slow in zip(built, expected, strict=True):
        assert type(fast) is type(slow)
        assert fast == slow
        assert hash(fast) == hash(slow)
        assert repr(fast) == repr(slow)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fast, dataclasses.fields(fast)[0].name, 2)


def test_engine_trade_events_are_complete_frozen_instances() -> None:
    book = OrderBook("X")
    book.submit(limit(1, SELL, 5, 100, account=7), 1)
    produced = book.submit(market(2, BUY, 3, account=8), 2)
    trade = produced[1]
    assert type(trade) is events.Trade
    assert trade == events.Trade(1, 2, 100, 3, BUY, 7, 8, 2, 0, 1, 2)
    assert dataclasses.asdict(trade)["maker_remaining"] == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        trade.qty = 1  # type: ignore[misc]


def test_events_pickle() -> None:
    event = events.replaced(1, 2, 3, 4, 5)
    assert pickle.loads(pickle.dumps(event)) == event  # noqa: S301 - our own data


def test_events_serialise_as_plain_data() -> None:
    book = OrderBook("X")
    produced = book.submit(limit(1, SELL, 5, 100), 1) + book.submit(market(2, BUY, 3, account=2))
    rows = [dataclasses.asdict(event) for event in produced]
    assert json.loads(json.dumps(rows)) == rows
