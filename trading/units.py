"""Conversions at the engine boundary and the money arithmetic of orders and fills.

Everything is `Decimal`; never float. The engine works in integer ticks and lots.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal

_WIDE = Context(prec=60)
ZERO = Decimal(0)


class NotAMultiple(ValueError):
    """A price or quantity that is not a whole number of ticks or lots."""


def steps(value: Decimal, step: Decimal) -> int:
    """Return `value / step` as an int; raise NotAMultiple when it is not whole."""
    count = _WIDE.divide(value, step)
    if count != count.to_integral_value():
        raise NotAMultiple(f"{value} is not a multiple of {step.normalize()}")
    return int(count)


def quantum(precision: int) -> Decimal:
    return Decimal(1).scaleb(-precision)


def ceil_to(value: Decimal, precision: int) -> Decimal:
    return value.quantize(quantum(precision), rounding=ROUND_CEILING, context=_WIDE)


def floor_to(value: Decimal, precision: int) -> Decimal:
    return value.quantize(quantum(precision), rounding=ROUND_FLOOR, context=_WIDE)


def buy_hold(*, quantity: Decimal, price: Decimal, fee_rate: Decimal, precision: int) -> Decimal:
    """What a buy of `quantity` at most at `price` can cost, its fees included.

    A fill's quote amount is booked on the buyer's cumulative notional rounded up, and its fee
    rounded down; so however the order fills, it never costs more than this.
    """
    notional = ceil_to(_WIDE.multiply(quantity, price), precision)
    return notional + ceil_to(_WIDE.multiply(notional, fee_rate), precision)


def fill_amount(*, notional_before: Decimal, notional_after: Decimal, precision: int) -> Decimal:
    """The quote amount of one fill: the step of the buyer's cumulative notional, rounded up."""
    return ceil_to(notional_after, precision) - ceil_to(notional_before, precision)


def fee(*, amount: Decimal, rate: Decimal, precision: int) -> Decimal:
    """The fee on a quote amount, rounded down to the quote asset's precision."""
    if not rate:
        return ZERO
    return floor_to(_WIDE.multiply(amount, rate), precision)


def plain(value: Decimal | int | None) -> str | None:
    """A Decimal as a short string without exponent ("1.5", "100")."""
    if value is None:
        return None
    return f"{Decimal(value).normalize():f}"
