"""What a fill and a replace do to an order (pure: the order's fields, no database).

The matcher calls these with the engine's integer lots and ticks already turned into Decimals.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from trading.models import Order

_AVG = Decimal(1).scaleb(-10)


def fill_apply(
    order: Order,
    *,
    quantity: Decimal,
    notional: Decimal,
    amount: Decimal,
    fee: Decimal,
    is_buyer: bool,
    remaining_lots: int,
    now: datetime,
) -> bool:
    """Record one fill on `order`; return True when it filled the order.

    The buyer's hold pays the quote amount and its fee; the seller's hold delivers the base
    quantity. A filled order's rest of hold is for the caller to release.
    """
    order.filled_quantity += quantity
    order.filled_notional += notional
    order.filled_quote += amount
    order.fees += fee
    order.average_price = (order.filled_notional / order.filled_quantity).quantize(_AVG)
    order.last_fill_at = now
    order.held -= amount + fee if is_buyer else quantity
    if remaining_lots == 0:
        order.status = Order.Status.FILLED
        order.reason = ""
        order.closed_at = now
        return True
    order.status = Order.Status.PARTIALLY_FILLED
    return False


def replace_apply(order: Order, *, open_quantity: Decimal, price: Decimal | None) -> None:
    """Give `order` its new open quantity and, a limit order, its new price (None: unchanged).

    Whether it loses its time priority (a new price or a larger quantity) is the engine's
    event to tell; the caller re-prioritises.
    """
    order.quantity = order.filled_quantity + open_quantity
    if price is not None and order.price is not None:
        order.price = price
    order.reason = ""
