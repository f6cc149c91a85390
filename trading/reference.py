"""Changes of an instrument's trading rules: for new orders only, at one point in the book.

`instrument_rules_change` is the one way to change the rules (tick size, lot size, order size
limits, price band, fee rates) of an existing instrument; the admin's "Change trading rules"
form calls it. In one transaction it locks the instrument, checks the change, writes it and an
`instrument.rules` command on the `orders` topic (an outbox row, keyed by the symbol like the
book's other commands). So:

- Placement validates a new order against the rules of the moment and records the fee rates on
  the order (`placement.new_order`); its hold covers them and the matcher charges them. A fee
  change never reaches an order placed before it, and never under-holds one.
- The matcher applies the command where it stands in the book's command sequence: the orders
  validated under the new rules were committed after the change, so their commands follow it.
- Tick size and lot size are the matcher's units (its books count whole ticks and lots), so
  they change only on a halted instrument without open orders or commands waiting. An order
  that still ends up off the book's grid (it raced the change, or the rules were changed
  behind this service's back) is rejected or canceled by the matcher with reason
  `rules_changed`, never dead-lettered with its funds held.

An asset's precision and an instrument's base and quote are not rules: they never change once
used (see `Asset.is_used`, `Instrument.is_used` and the migrations' triggers).
See docs/decisions/0010-reference-data.md.
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models, transaction

from trading.exceptions import TradingError, UnknownInstrument
from trading.matching.commands import RULES_CHANGE
from trading.models import Instrument, Order, Outbox
from trading.units import ceil_to, plain
from tredye import kafka

logger = logging.getLogger(__name__)

RULES = Instrument.RULES
# The matcher's units: they change only while the book is empty and halted.
GRID_RULES = ("tick_size", "lot_size")


class RulesChangeRefused(TradingError):
    """The rules cannot change now (see `code`); nothing was written."""

    code = "rules_change_refused"
    status = 409


class InvalidRule(TradingError):
    """A rule's value is not acceptable (see `code`: invalid_<rule>)."""

    code = "invalid_rule"


def rule_field(name: str) -> models.DecimalField[Any, Decimal]:
    """The model field of one trading rule: every rule is a decimal."""
    field = Instrument._meta.get_field(name)
    if not isinstance(field, models.DecimalField):
        raise TypeError(f"{name!r} is not a decimal field of Instrument")
    return field


def _rule_value(name: str, value: object) -> Decimal | None:
    if name == "max_quantity" and (value is None or value == ""):
        return None  # no limit
    if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
        raise InvalidRule(f"{name} must be a decimal string", code=f"invalid_{name}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidRule(f"{name} {value!r} is not a number", code=f"invalid_{name}") from None
    field = rule_field(name)
    if not number.is_finite() or number < 0:
        raise InvalidRule(f"{name} must be a number >= 0", code=f"invalid_{name}")
    if number != round(number, field.decimal_places):
        raise InvalidRule(
            f"{name} takes at most {field.decimal_places} decimal places", code=f"invalid_{name}"
        )
    if number >= Decimal(10) ** (field.max_digits - field.decimal_places):
        raise InvalidRule(f"{name} is too large", code=f"invalid_{name}")
    return number


def rules_validate(instrument: Instrument, rules: dict[str, Any]) -> dict[str, Decimal | None]:
    """The rules as Decimals, checked against each other and the instrument's assets, merged
    over its current ones. Raises InvalidRule."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise InvalidRule(f"not a trading rule: {', '.join(unknown)}", code="unknown_rule")
    merged = {name: getattr(instrument, name) for name in RULES}
    merged |= {name: _rule_value(name, value) for name, value in rules.items()}
    for name in ("tick_size", "lot_size"):
        if not merged[name]:
            raise InvalidRule(f"{name} must be positive", code=f"invalid_{name}")
    base = instrument.base
    if merged["lot_size"] != ceil_to(merged["lot_size"], base.precision):
        raise InvalidRule(
            f"lot_size {plain(merged['lot_size'])} is finer than {base.code} allows "
            f"({base.precision} decimal places)",
            code="invalid_lot_size",
        )
    if merged["max_quantity"] is not None and not merged["max_quantity"]:
        raise InvalidRule(
            "max_quantity must be positive (or empty: no limit)", code="invalid_max_quantity"
        )
    if merged["max_quantity"] is not None and merged["max_quantity"] < merged["min_quantity"]:
        raise InvalidRule("max_quantity is below min_quantity", code="invalid_max_quantity")
    if not 0 < merged["price_band_pct"] < 100:
        raise InvalidRule(
            "price_band_pct must be above 0 and below 100", code="invalid_price_band_pct"
        )
    for name in ("maker_fee_rate", "taker_fee_rate"):
        if not merged[name] < 1:
            raise InvalidRule(f"{name} must be below 1 (100%)", code=f"invalid_{name}")
    return merged


def book_busy(instrument: Instrument) -> tuple[int, int]:
    """The instrument's open orders and the commands of its book not yet applied."""
    open_orders = Order.objects.filter(
        instrument=instrument, status__in=Order.OPEN_STATUSES
    ).count()
    waiting = (
        Outbox.objects.filter(topic=kafka.ORDERS, key=instrument.symbol, applied_at__isnull=True)
        .exclude(type=RULES_CHANGE)
        .count()
    )
    return open_orders, waiting


@transaction.atomic(durable=True)
def instrument_rules_change(
    *, symbol: str, changed_by: str | None = None, **rules: Any
) -> Instrument:
    """Change an instrument's trading rules for the orders placed from now on.

    `rules`: any of tick_size, lot_size, min_quantity, max_quantity (None: no limit),
    price_band_pct, maker_fee_rate, taker_fee_rate, as Decimals or decimal strings. Returns the
    instrument. Raises UnknownInstrument, InvalidRule, or RulesChangeRefused (code
    `instrument_not_halted` or `book_not_empty`) when the tick or lot size would change on an
    instrument that is open or has open orders or commands waiting.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    instrument = (
        Instrument.objects.select_for_update(of=("self",))
        .select_related("base", "quote")
        .filter(symbol=symbol.strip().upper())
        .first()
    )
    if instrument is None:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    merged = rules_validate(instrument, rules)
    changed = [name for name in RULES if merged[name] != getattr(instrument, name)]
    if not changed:
        return instrument
    if set(changed) & set(GRID_RULES):
        if instrument.status == Instrument.Status.OPEN:
            raise RulesChangeRefused(
                f"{instrument.symbol} is open: halt it and cancel its open orders before "
                "changing its tick or lot size (the matching engine counts whole ticks and lots)",
                code="instrument_not_halted",
            )
        open_orders, waiting = book_busy(instrument)
        if open_orders or waiting:
            raise RulesChangeRefused(
                f"{instrument.symbol} has {open_orders} open order(s) and {waiting} command(s) "
                "waiting for the matcher: cancel its open orders (and let the matcher apply "
                "what waits) before changing its tick or lot size",
                code="book_not_empty",
            )
    old = {name: getattr(instrument, name) for name in changed}
    # The rules before the change too: `manage.py replay` starts each book under the rules in
    # force before its first change (trading/replay.py).
    previous = {name: plain(getattr(instrument, name)) for name in RULES}
    for name in changed:
        setattr(instrument, name, merged[name])
    instrument.save(update_fields=changed)
    Outbox(
        topic=kafka.ORDERS,
        key=instrument.symbol,
        type=RULES_CHANGE,
        seq=0,
        ts=kafka.now_ms(),
        data={
            "rules": {name: plain(merged[name]) for name in RULES},
            "previous": previous,
            "changed": changed,
            "changed_by": changed_by or "",
        },
    ).save(force_insert=True)
    logger.warning(
        "trading rules of %s changed by %s: %s",
        instrument.symbol,
        changed_by or "(unknown)",
        ", ".join(f"{name} {plain(old[name])} -> {plain(merged[name])}" for name in changed),
    )
    return instrument
