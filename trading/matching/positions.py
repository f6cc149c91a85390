"""Positions and realised P&L: what one fill does to an account's position (pure, no database).

A position is signed (long > 0, short < 0) with the average cost of what is open. A fill in the
position's direction (or from flat) averages its price in; one against it realises
`closed quantity * (price - average cost)` (sign of the position) and keeps the average cost of
what stays open; a fill that flips the position opens the rest at the fill's price.

Average cost and each fill's realised P&L are rounded to the 18 places the database stores, so
the matcher's memory, a position reloaded after a restart, replay and reconciliation's fold of
the fills all hold the same figures exactly.
"""

from __future__ import annotations

from decimal import Context, Decimal

from trading.units import ZERO

_WIDE = Context(prec=60)
_COST = Decimal(1).scaleb(-18)


def position_after(
    quantity: Decimal,
    average_cost: Decimal,
    realized_pnl: Decimal,
    change: Decimal,
    price: Decimal,
) -> tuple[Decimal, Decimal, Decimal]:
    """(quantity, average cost, realised P&L) after a fill of `change` (signed) at `price`."""
    if quantity == 0 or (quantity > 0) == (change > 0):
        total = quantity + change
        average = ((abs(quantity) * average_cost + abs(change) * price) / abs(total)).quantize(
            _COST, context=_WIDE
        )
        return total, average, realized_pnl
    closing = min(abs(change), abs(quantity))
    direction = 1 if quantity > 0 else -1
    realized = _WIDE.multiply(closing, _WIDE.subtract(price, average_cost)).quantize(
        _COST, context=_WIDE
    )
    realized_pnl = _WIDE.add(realized_pnl, realized if direction > 0 else -realized)
    total = quantity + change
    if total == 0:
        average_cost = ZERO
    elif (total > 0) != (quantity > 0):
        average_cost = price
    return total, average_cost, realized_pnl
