"""Positions and realised P&L: what one fill does to an account's position (pure, no database).

A position is signed (long > 0, short < 0) with the average cost of what is open. A fill in the
position's direction (or from flat) averages its price in; one against it realises
`closed quantity * (price - average cost)` (sign of the position) and keeps the average cost of
what stays open; a fill that flips the position opens the rest at the fill's price.
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
    realized_pnl += closing * (price - average_cost) * direction
    total = quantity + change
    if total == 0:
        average_cost = ZERO
    elif (total > 0) != (quantity > 0):
        average_cost = price
    return total, average_cost, realized_pnl
