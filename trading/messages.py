"""The JSON shapes of orders as the account-events topic and the JSON endpoints show them.

Views, the matcher and the streams share them, so a field is added in one place.
"""

from __future__ import annotations

from typing import Any

from trading.models import Order
from trading.units import plain


def order_message(order: Order) -> dict[str, Any]:
    """An order as the account-events topic and the JSON endpoints show it."""
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "symbol": order.instrument.symbol if "instrument" in order._state.fields_cache else None,
        "instrument_id": order.instrument_id,
        "side": order.side,
        "type": order.type,
        "time_in_force": order.time_in_force,
        "post_only": order.post_only,
        "quantity": plain(order.quantity),
        "price": plain(order.price),
        "stop_price": plain(order.stop_price),
        "status": order.status,
        "reason": order.reason,
        "filled_quantity": plain(order.filled_quantity),
        "average_price": plain(order.average_price),
        "fees": plain(order.fees),
        "held": plain(order.held),
    }
