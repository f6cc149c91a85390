"""Commands and enumerations of the matching engine.

Prices are integer ticks and quantities integer lots; the caller converts from ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Side(IntEnum):
    """Side of an order. The value is the sign of the position change it causes."""

    BUY = 1
    SELL = -1


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2
    STOP = 3
    STOP_LIMIT = 4


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    DAY = 4


class SelfTradePrevention(IntEnum):
    """What happens when an incoming order would trade with its own account's resting order."""

    CANCEL_NEWEST = 1  # cancel the incoming (taker) order's remainder; the resting one stays
    CANCEL_OLDEST = 2  # cancel the resting (maker) order; the incoming one keeps matching
    CANCEL_BOTH = 3  # cancel both


@dataclass(frozen=True, slots=True)
class Order:
    """An order command. Constructing one never validates; ``OrderBook.submit`` does.

    ``price`` is the limit price (LIMIT, STOP_LIMIT); ``stop_price`` the trigger price (STOP,
    STOP_LIMIT). Fields that do not apply to the type must be ``None``.
    """

    id: int
    account_id: int
    side: Side
    type: OrderType
    qty: int
    price: int | None = None
    stop_price: int | None = None
    tif: TimeInForce = TimeInForce.GTC
    post_only: bool = False


class Reason:
    """Machine-readable reasons carried by ``Rejected`` and ``Canceled`` events."""

    # Rejected
    INVALID_ID = "invalid_id"
    INVALID_ACCOUNT = "invalid_account"
    INVALID_SIDE = "invalid_side"
    INVALID_TYPE = "invalid_type"
    INVALID_TIF = "invalid_tif"
    INVALID_QTY = "invalid_qty"
    NO_PRICE = "no_price"
    INVALID_PRICE = "invalid_price"
    NO_STOP_PRICE = "no_stop_price"
    INVALID_STOP_PRICE = "invalid_stop_price"
    INVALID_POST_ONLY = "invalid_post_only"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_ORDER = "unknown_order"
    POST_ONLY_WOULD_CROSS = "post_only_would_cross"
    FOK_UNFILLABLE = "fok_unfillable"
    # Canceled
    USER = "user"
    NO_LIQUIDITY = "no_liquidity"
    IOC_REMAINDER = "ioc_remainder"
    SELF_TRADE = "self_trade"
