"""Tredye's matching engine: a pure, deterministic price-time-priority order book.

No Django, no clock, no I/O. Prices are integer ticks, quantities integer lots.
"""

from trading.engine.book import OrderBook, OrderView
from trading.engine.events import (
    Accepted,
    BookDelta,
    Canceled,
    Event,
    Expired,
    Rejected,
    Replaced,
    Trade,
    Triggered,
)
from trading.engine.types import Order, OrderType, Reason, SelfTradePrevention, Side, TimeInForce

__all__ = [
    "Accepted",
    "BookDelta",
    "Canceled",
    "Event",
    "Expired",
    "Order",
    "OrderBook",
    "OrderType",
    "OrderView",
    "Reason",
    "Rejected",
    "Replaced",
    "SelfTradePrevention",
    "Side",
    "TimeInForce",
    "Trade",
    "Triggered",
]
