"""The trading rules, in one place: pure functions of an instrument's rules and an order.

Which fields are an instrument's rules, the tick/lot/size checks, the price band around the
reference price (which placement's SQL reads: `sql.REFERENCE`), the protection price of
a market order, the fee rates an order pays, and how much an order holds, of which asset.
Placement, replace, cancel, the matcher, the market maker and the ledger checks call these;
nothing here reads the database (a caller passes what it read). A refusal raises
`OrderRejected` with its code.

Where SQL must enforce a rule atomically (the one-statement placement write), it does not
restate it: it checks that the instrument's `rules_version` is the one the order was checked
against, and that the reference price of the moment is one around which `band_around` admits
the order's price (`references_admitting`, computed here from `band_around` itself).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any, Protocol

from trading.exceptions import OrderRejected
from trading.units import NotAMultiple, buy_hold, steps

# The columns of an instrument that are its trading rules (changed only through
# trading.reference.instrument_rules_change; any change bumps Instrument.rules_version).
RULE_FIELDS = (
    "tick_size",
    "lot_size",
    "min_quantity",
    "max_quantity",
    "price_band_pct",
    "maker_fee_rate",
    "taker_fee_rate",
)

BUY, SELL = "buy", "sell"
OPEN, HALTED = "open", "halted"


class Rules(Protocol):
    """What the rules read of an instrument (an Instrument has all of it)."""

    symbol: str
    status: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal | None
    price_band_pct: Decimal
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal
    base: Any
    quote: Any


Band = tuple[Decimal, Decimal]


# --- the grid and sizes ----------------------------------------------------------------------


def check_open(instrument: Rules) -> None:
    """New orders need an open instrument (cancels do not)."""
    if instrument.status == HALTED:
        raise OrderRejected(f"{instrument.symbol} is halted", code="instrument_halted")
    if instrument.status != OPEN:
        raise OrderRejected(f"{instrument.symbol} is closed", code="instrument_closed")


def on_grid(value: Decimal, step: Decimal, name: str, code: str) -> None:
    """`value` must be a whole number of `step`s."""
    try:
        steps(value, step)
    except NotAMultiple:
        raise OrderRejected(
            f"{name} {value.normalize():f} is not a multiple of {step.normalize():f}", code=code
        ) from None


def check_size(instrument: Rules, quantity: Decimal) -> None:
    on_grid(quantity, instrument.lot_size, "quantity", "invalid_lot_size")
    if quantity < instrument.min_quantity:
        raise OrderRejected(
            f"quantity is below the minimum of {instrument.min_quantity.normalize():f}",
            code="quantity_too_small",
        )
    if instrument.max_quantity is not None and quantity > instrument.max_quantity:
        raise OrderRejected(
            f"quantity is above the maximum of {instrument.max_quantity.normalize():f}",
            code="quantity_too_large",
        )


def check_price(instrument: Rules, price: Decimal, band: Band | None, name: str = "price") -> None:
    """On the tick grid and, when there is a band, inside it."""
    on_grid(price, instrument.tick_size, name, "invalid_tick_size")
    if band is not None and not band[0] <= price <= band[1]:
        raise OrderRejected(
            f"{name} {price.normalize():f} is outside the price band "
            f"{band[0].normalize():f}–{band[1].normalize():f}",
            code="price_outside_band",
        )


def check_stop_price(instrument: Rules, stop_price: Decimal) -> None:
    """A stop price is on the tick grid (it is not held to the band: it triggers later)."""
    on_grid(stop_price, instrument.tick_size, "stop_price", "invalid_tick_size")


# --- the band (around the reference price: `trading.sql.REFERENCE`) ---------------


def band_around(instrument: Rules, reference: Decimal | None) -> Band | None:
    """The lowest and highest acceptable limit price: `price_band_pct` either side of the
    reference, inward to whole ticks (at least one tick); None without a reference."""
    if reference is None:
        return None
    width = reference * instrument.price_band_pct / 100
    tick = instrument.tick_size
    low_ticks = max(int(((reference - width) / tick).to_integral_value(ROUND_CEILING)), 1)
    high_ticks = int(((reference + width) / tick).to_integral_value(ROUND_FLOOR))
    return low_ticks * tick, high_ticks * tick


def references_admitting(
    instrument: Rules, price: Decimal, *, quantum: Decimal, top: Decimal
) -> Band:
    """The reference prices around which `price` is inside the band: `(lowest, highest)`,
    among multiples of `quantum` from one `quantum` to `top` (the reference's column);
    lowest > highest when there are none.

    The inverse of `band_around`, found by bisecting `band_around` itself (both edges of the
    band rise with the reference), so SQL can check "inside the band around the reference of
    the moment" by comparing that reference with two numbers, without a second copy of the
    rule. Cached per price, rules and rule (`band_around` itself is part of the key): about
    190 calls of `band_around` the first time, 3 µs after.
    """
    rules = tuple(getattr(instrument, name) for name in RULE_FIELDS)
    return _references_admitting(band_around, rules, price, quantum, top)


@lru_cache(maxsize=4096)
def _references_admitting(
    rule: Callable[[Rules, Decimal], Band | None],
    rules: tuple,
    price: Decimal,
    quantum: Decimal,
    top: Decimal,
) -> Band:
    instrument = _RuleValues(*rules)
    last = int(top / quantum)

    def band(step: int) -> Band:
        found = rule(instrument, quantum * step)  # type: ignore[arg-type]
        assert found is not None  # noqa: S101 - band_around gives a band around any price
        return found

    # The first reference whose band reaches up to the price, the last whose band starts at
    # or below it (bisection over whole quanta; `band` rises with the step).
    low, high = 1, last + 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if band(middle)[1] >= price else (middle + 1, high)
    first = low
    low, high = 0, last
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if band(middle)[0] <= price else (low, middle - 1)
    if first > last or low < 1:
        return top, Decimal(0)  # no reference admits it
    return quantum * first, quantum * low


class _RuleValues:
    """An instrument's rule values by name (what `band_around` reads), for the cache."""

    __slots__ = RULE_FIELDS

    def __init__(self, *values: Decimal | None) -> None:
        for name, value in zip(RULE_FIELDS, values, strict=True):
            setattr(self, name, value)


def protection_price(instrument: Rules, side: str, band: Band | None) -> Decimal:
    """The limit a market order runs at: the band's far edge on its side."""
    if band is None:
        raise OrderRejected(
            f"{instrument.symbol} has no reference price for a market order",
            code="no_reference_price",
        )
    return band[1] if side == BUY else band[0]


# --- fees and holds --------------------------------------------------------------------------


def max_fee_rate(rates: Any) -> Decimal:
    """The higher of an instrument's (or an order's) maker and taker fee rates."""
    return max(rates.maker_fee_rate, rates.taker_fee_rate)


def fee_rates(instrument: Rules) -> dict[str, Decimal]:
    """The fee rates a new order records and pays (decision 0010)."""
    return {
        "maker_fee_rate": instrument.maker_fee_rate,
        "taker_fee_rate": instrument.taker_fee_rate,
    }


def hold_asset(instrument: Rules, side: str) -> Any:
    """The asset an order on this side holds: the quote for a buy, the base for a sell."""
    return instrument.quote if side == BUY else instrument.base


def hold_for(
    *,
    instrument: Rules,
    side: str,
    open_quantity: Decimal,
    price: Decimal,
    fee_rate: Decimal | None = None,
) -> Decimal:
    """What an order with this open quantity at most at `price` must hold: the base quantity
    for a sell; for a buy the most it can cost with fees, at the instrument's highest fee rate
    or at `fee_rate` (an existing order's own)."""
    if side == SELL:
        return open_quantity
    return buy_hold(
        quantity=open_quantity,
        price=price,
        fee_rate=max_fee_rate(instrument) if fee_rate is None else fee_rate,
        precision=instrument.quote.precision,
    )
