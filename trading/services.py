"""Writes for trading: placing, canceling and replacing orders, halting instruments.

The order services never touch the book: each validates, holds the funds, writes the order
and an outbox row in one durable transaction. The relay produces the outbox to the `orders`
topic after commit, and the matcher (trading/matching/) applies the command. See
docs/architecture.md §4 and docs/decisions/0004-order-path-exactly-once.md.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, overload

import psycopg
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from accounts.exceptions import AccountFrozen, InsufficientFunds, LedgerError
from accounts.lock_objects import accounts_lock
from accounts.models import Account
from accounts.services import amount_format, funds_hold
from trading import rules
from trading.exceptions import (
    ClientOrderIdConflict,
    OrderNotOpen,
    OrderRejected,
    TradingError,
    UnknownInstrument,
    UnknownOrder,
)
from trading.lock_objects import orders_lock
from trading.matching.commands import CANCEL, EXPIRE_DAY, PLACE, REPLACE
from trading.models import Instrument, Order, Outbox
from trading.placement import (
    ACCOUNT,
    BAND,
    CLIENT_ORDER_ID,
    FUNDS,
    INSTRUMENT_STATUS,
    RULES_VERSION,
    Written,
    available_balance,
    cached_instrument,
    new_order,
    order_id_for,
    placement_read,
    placement_write,
)
from trading.selectors import reference_price
from trading.units import ceil_to
from tredye import kafka

CLIENT_ORDER_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# ---------------------------------------------------------------------------------------------
# Validation (pure)
# ---------------------------------------------------------------------------------------------


@overload
def _decimal(value: object, name: str, *, required: Literal[True]) -> Decimal: ...
@overload
def _decimal(value: object, name: str, *, required: bool) -> Decimal | None: ...
def _decimal(value: object, name: str, *, required: bool) -> Decimal | None:
    if value is None or value == "":
        if required:
            raise OrderRejected(f"{name} is required", code=f"missing_{name}")
        return None
    if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
        raise OrderRejected(
            f"{name} must be a decimal string, not {type(value).__name__}", code=f"invalid_{name}"
        )
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise OrderRejected(f"{name} {value!r} is not a number", code=f"invalid_{name}") from None
    if not number.is_finite() or number <= 0:
        raise OrderRejected(f"{name} must be a positive number", code=f"invalid_{name}")
    if number >= Decimal(10) ** 19:
        raise OrderRejected(f"{name} is too large", code=f"invalid_{name}")
    return number


# The values of each choices class (Django's `.values` builds a new list on every access).
_CHOICE_VALUES: dict[type, frozenset[str]] = {}


def _choice(value: object, choices: type[models.TextChoices], name: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    values = _CHOICE_VALUES.get(choices)
    if values is None:
        values = _CHOICE_VALUES[choices] = frozenset(choices.values)
    if not isinstance(text, str) or text not in values:
        allowed = ", ".join(choices.values)
        raise OrderRejected(f"{name} must be one of {allowed}", code=f"invalid_{name}")
    return text


def _band(instrument: Instrument) -> rules.Band | None:
    """The band around the reference price read now."""
    return rules.band_around(instrument, reference_price(instrument=instrument))


def _instrument(symbol: object) -> Instrument:
    if not isinstance(symbol, str) or not symbol:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    instrument = (
        Instrument.objects.select_related("base", "quote", "book_state", "price_model")
        .filter(symbol=symbol.strip().upper())
        .first()
    )
    if instrument is None:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    return instrument


def _outbox(*, type: str, symbol: str, seq: int, data: dict[str, Any]) -> Outbox:  # noqa: A002
    return Outbox(topic=kafka.ORDERS, key=symbol, type=type, seq=seq, ts=kafka.now_ms(), data=data)


def _hold(*, account: Account, order: Order, amount: Decimal, memo: str) -> None:
    try:
        funds_hold(
            account=account,
            asset=rules.hold_asset(order.instrument, order.side),
            amount=amount,
            reference=f"order {order.pk}",
            memo=memo,
        )
    except AccountFrozen as error:
        raise OrderRejected(error.detail, code="account_frozen") from None
    except InsufficientFunds as error:
        raise OrderRejected(error.detail, code="insufficient_funds") from None
    except LedgerError as error:  # e.g. an amount finer than the asset allows
        raise OrderRejected(error.detail, code=error.code) from None


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def order_place(
    *,
    account: Account,
    symbol: str | None,
    client_order_id: str | None = None,
    side: str | None,
    type: str = Order.Type.LIMIT,  # noqa: A002
    quantity: Decimal | str | None,
    price: Decimal | str | None = None,
    stop_price: Decimal | str | None = None,
    time_in_force: str = Order.TimeInForce.GTC,
    post_only: bool = False,
) -> Order:
    """Validate an order, hold its funds and queue it for the matcher (status PENDING_NEW).

    `client_order_id` is the trader's key for retrying safely (one is generated when it is
    None): the same id with the same parameters returns the order placed first and creates
    nothing; with other parameters it raises ClientOrderIdConflict (409).
    `symbol`, `side` and `quantity` may be None (a request that left them out): that is refused
    like any other bad value (UnknownInstrument, OrderRejected invalid_side or missing_quantity).
    Raises OrderRejected (with a code such as invalid_tick_size, price_outside_band,
    instrument_halted, account_frozen, insufficient_funds) or UnknownInstrument.

    Durable on return, like `atomic(durable=True)`: its writes are one statement, committed on
    its own (placement.py), so it must not run inside the caller's transaction.
    """
    _durable_guard("order_place")
    if client_order_id is None:
        client_order_id = generated_client_order_id()
    if not isinstance(client_order_id, str) or not CLIENT_ORDER_ID_RE.fullmatch(client_order_id):
        raise OrderRejected(
            "client_order_id must be 1-64 letters, digits or . _ : -",
            code="invalid_client_order_id",
        )
    side = _choice(side, Order.Side, "side")
    order_type = _choice(type, Order.Type, "type")
    tif = _choice(time_in_force, Order.TimeInForce, "time_in_force")
    if not isinstance(post_only, bool):
        raise OrderRejected("post_only must be true or false", code="invalid_post_only")
    quantity = _decimal(quantity, "quantity", required=True)
    has_limit = order_type in (Order.Type.LIMIT, Order.Type.STOP_LIMIT)
    is_stop = order_type in (Order.Type.STOP, Order.Type.STOP_LIMIT)
    price = _decimal(price, "price", required=has_limit)
    stop_price = _decimal(stop_price, "stop_price", required=is_stop)
    if not has_limit and price is not None:
        raise OrderRejected(f"a {order_type} order takes no price", code="invalid_price")
    if not is_stop and stop_price is not None:
        raise OrderRejected(f"a {order_type} order takes no stop price", code="invalid_stop_price")
    if post_only and (not has_limit or tif in (Order.TimeInForce.IOC, Order.TimeInForce.FOK)):
        raise OrderRejected(
            "post-only needs a limit price and a GTC or DAY time in force",
            code="invalid_post_only",
        )
    if account.pk is None:
        raise OrderRejected("the account does not exist", code="unknown_account")
    if not isinstance(symbol, str) or not symbol:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")

    symbol = symbol.strip().upper()
    fields = {
        "client_order_id": client_order_id,
        "side": side,
        "type": order_type,
        "time_in_force": tif,
        "post_only": post_only,
        "quantity": quantity,
        "price": price,
        "stop_price": stop_price,
    }
    if price is not None:
        # One round trip: a priced order checked against the rules this process last read.
        # The write checks those rules again, the account, the client order id and the price
        # band around the reference price of the moment; whatever it refuses (or the cached
        # rules refuse) is decided again below with everything read afresh.
        instrument = cached_instrument(symbol)
        if instrument is not None and instrument.status == Instrument.Status.OPEN:
            try:
                rules.check_size(instrument, quantity)
                rules.check_price(instrument, price, None)
                if stop_price is not None:
                    rules.check_stop_price(instrument, stop_price)
            except OrderRejected:
                pass
            else:
                placed, _ = _order_write(account, instrument, None, fields, fast=True)
                if placed is not None:
                    return placed

    # Two round trips: read the account's state, the rules and the reference price; validate.
    placement = placement_read(
        account_id=account.pk, symbol=symbol, client_order_id=client_order_id
    )
    if placement is None:
        if not Account.objects.filter(pk=account.pk).exists():
            raise OrderRejected("only a customer account can place orders", code="unknown_account")
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    if placement.account_kind != Account.Kind.CUSTOMER:
        raise OrderRejected("only a customer account can place orders", code="unknown_account")
    if placement.existing_order_id is not None:
        return _placed_before(placement.existing_order_id, symbol, fields)
    if placement.account_status == Account.Status.FROZEN:
        raise OrderRejected(f"account #{account.pk} is frozen", code="account_frozen")
    instrument = placement.instrument
    rules.check_open(instrument)
    rules.check_size(instrument, quantity)
    band = rules.band_around(instrument, placement.reference)
    if price is not None:
        rules.check_price(instrument, price, band)
    if stop_price is not None:
        rules.check_stop_price(instrument, stop_price)
    protection = None if has_limit else rules.protection_price(instrument, side, band)
    placed, written = _order_write(account, instrument, protection, fields, fast=False)
    if placed is not None:
        return placed
    return _placement_refused(account, symbol, fields, instrument, protection, written)


def generated_client_order_id() -> str:
    """A client order id for an order placed without one (32 hex digits, never repeated)."""
    return uuid.uuid4().hex


# What a repeated client order id must repeat to be the same order; quantity and price only
# while the order was never cancelled in part or replaced (they are its current terms).
_SAME_ORDER = ("side", "type", "time_in_force", "post_only", "stop_price")
_SAME_TERMS = ("quantity", "price")


def _placed_before(order_id: int, symbol: str, fields: dict[str, Any]) -> Order:
    """The order placed before with this client order id, if it is the same order; raise
    ClientOrderIdConflict if the request differs from it."""
    order = Order.objects.select_related("instrument").get(pk=order_id)
    compared = _SAME_ORDER + (_SAME_TERMS if order.command_seq == 0 else ())
    differs = [name for name in compared if getattr(order, name) != fields[name]]
    if order.instrument.symbol != symbol:
        differs.insert(0, "symbol")
    if differs:
        raise ClientOrderIdConflict(
            f"client_order_id {fields['client_order_id']!r} is order {order.pk}, placed with "
            f"another {', '.join(differs)}; use a new client_order_id for a new order",
        )
    return order


def _order_write(
    account: Account,
    instrument: Instrument,
    protection: Decimal | None,
    fields: dict[str, Any],
    *,
    fast: bool,
) -> tuple[Order | None, Written]:
    """Compute the hold and write the order (`placement_write`): the order, or None and what
    refused it (a racing call's committed client order id is reported as that guard).

    `fast` (rules from the cache): a value the database refuses is also a refusal, to be
    decided again with fresh rules.
    """
    side = fields["side"]
    asset, hold = _hold_of(instrument, fields, protection)
    if hold != ceil_to(hold, asset.precision):
        raise OrderRejected(
            f"{asset.code} allows {asset.precision} decimal places; the hold {hold} has more",
            code="invalid_amount",
        )
    now = timezone.now()
    order = new_order(
        account=account,
        instrument=instrument,
        protection_price=protection,
        held=hold,
        created_at=now,
        updated_at=now,
        **fields,
    )
    try:
        # In a test's transaction the statement gets a savepoint, so a refusal leaves it usable.
        with transaction.atomic() if transaction.get_connection().in_atomic_block else _NO_TX:
            written = placement_write(
                order=order,
                rules_version=instrument.rules_version,
                asset_id=asset.pk,
                hold=hold,
                memo=f"{side} {instrument.symbol}",
                topic=kafka.ORDERS,
                type=PLACE,
                ts=kafka.now_ms(),
            )
    except IntegrityError as error:  # a value the database refuses, or a racing duplicate
        cause = error.__cause__
        if not fast and not (
            isinstance(cause, psycopg.errors.UniqueViolation)
            and cause.diag.constraint_name == _CLIENT_ORDER_ID_UNIQUE
        ):
            raise OrderRejected(f"the order is invalid: {error}", code="invalid_order") from None
        return None, Written(None, CLIENT_ORDER_ID)  # a racing call with the same id committed
    if written.order_id is None:
        return None, written
    order.pk = written.order_id
    order._state.adding = False
    return order, written


def _hold_of(
    instrument: Instrument, fields: dict[str, Any], protection: Decimal | None
) -> tuple[Any, Decimal]:
    """The asset a new order holds and how much: at its limit, a market order at its
    protection price."""
    limit: Decimal | None = fields["price"] or protection
    if limit is None:  # pragma: no cover - order_place gives a market order its protection
        raise RuntimeError("an order with neither a limit nor a protection price")
    side = fields["side"]
    hold = rules.hold_for(
        instrument=instrument, side=side, open_quantity=fields["quantity"], price=limit
    )
    return rules.hold_asset(instrument, side), hold


_NO_TX = contextlib.nullcontext()
_CLIENT_ORDER_ID_UNIQUE = "order_client_id_unique_per_account"


def _durable_guard(name: str) -> None:
    """Refuse to run inside the caller's transaction, as `atomic(durable=True)` would (a test
    case's own transaction excepted)."""
    blocks = transaction.get_connection().atomic_blocks
    if blocks and not blocks[-1]._from_testcase:
        raise RuntimeError(f"{name} commits on its own; call it outside any transaction")


def _placement_refused(
    account: Account,
    symbol: str,
    fields: dict[str, Any],
    instrument: Instrument,
    protection: Decimal | None,
    written: Written,
) -> Order:
    """The order a call with the same client order id placed, or the refusal of the guard
    that refused the write (`Written.refused`), with what it saw."""
    refused = written.refused
    if refused == CLIENT_ORDER_ID:
        existing = order_id_for(account_id=account.pk, client_order_id=fields["client_order_id"])
        if existing is None:  # pragma: no cover - the guard saw it; orders are never deleted
            raise RuntimeError(f"client order id {fields['client_order_id']!r} vanished")
        return _placed_before(existing, symbol, fields)
    if refused == ACCOUNT:
        raise OrderRejected(f"account #{account.pk} is frozen", code="account_frozen")
    if refused == INSTRUMENT_STATUS:
        # (None: the instrument is gone, which PROTECT forbids; reported as closed)
        status = written.instrument_status or Instrument.Status.CLOSED
        rules.check_open(Instrument(symbol=symbol, status=status))
    if refused == RULES_VERSION:
        raise OrderRejected(
            f"{symbol}'s trading rules changed while the order was placed; place it again",
            code="rules_changed",
        )
    if refused == BAND:
        rules.check_price(
            instrument, fields["price"], rules.band_around(instrument, written.reference)
        )
    if refused == FUNDS:
        asset, hold = _hold_of(instrument, fields, protection)
        available = available_balance(account_id=account.pk, asset_id=asset.pk)
        raise OrderRejected(
            f"account #{account.pk} has {amount_format(available, asset)} available, "
            f"{amount_format(hold, asset)} needed",
            code="insufficient_funds",
        )
    raise RuntimeError(f"placement refused by {refused!r}, which says nothing it refuses")


def _command(order: Order, *, type: str, data: dict[str, Any]) -> None:  # noqa: A002
    order.command_seq += 1
    order.updated_at = timezone.now()
    order.save(update_fields=["command_seq", "updated_at"])
    _outbox(
        type=type,
        symbol=order.instrument.symbol,
        seq=order.command_seq,
        data={"order_id": order.pk, "seq": order.command_seq, **data},
    ).save(force_insert=True)


def _locked_order(account: Account, order_id: object) -> Order:
    if isinstance(order_id, bool) or not isinstance(order_id, int):
        raise UnknownOrder(f"unknown order {order_id!r}")
    accounts_lock(account_ids=[account.pk])
    order = orders_lock(order_ids=[order_id]).get(order_id)
    if order is None or order.account_id != account.pk:
        raise UnknownOrder(f"unknown order {order_id!r}")
    return order


@transaction.atomic(durable=True)
def order_cancel(
    *, account: Account, order_id: int | None, quantity: Decimal | str | None = None
) -> Order:
    """Ask the matcher to cancel an order (or to reduce it by `quantity`).

    Works while the instrument is halted. Raises UnknownOrder (also for another account's
    order, and for an `order_id` of None: a URL whose id is not one), OrderNotOpen, or
    OrderRejected for a bad quantity.
    """
    order = _locked_order(account, order_id)
    if not order.is_open:
        raise OrderNotOpen(f"order {order.pk} is {order.status}")
    reduce_by = _decimal(quantity, "quantity", required=False)
    if reduce_by is not None:
        rules.on_grid(reduce_by, order.instrument.lot_size, "quantity", "invalid_lot_size")
    _command(
        order,
        type=CANCEL,
        data={"quantity": None if reduce_by is None else f"{reduce_by.normalize():f}"},
    )
    return order


@transaction.atomic(durable=True)
def order_replace(
    *,
    account: Account,
    order_id: int,
    quantity: Decimal | str,
    price: Decimal | str | None = None,
) -> Order:
    """Ask the matcher to change a live order's total quantity and limit price.

    Holds more funds first when the new order needs more. Raises UnknownOrder, OrderNotOpen
    (final, or not yet accepted: code order_pending), OrderRejected.
    """
    order = _locked_order(account, order_id)
    if order.status == Order.Status.PENDING_NEW:
        raise OrderNotOpen(f"order {order.pk} is not in the book yet", code="order_pending")
    if not order.is_open:
        raise OrderNotOpen(f"order {order.pk} is {order.status}")
    if order.type not in (Order.Type.LIMIT, Order.Type.STOP_LIMIT):
        raise OrderRejected("only limit orders can be replaced", code="not_replaceable")
    instrument = order.instrument
    rules.check_open(instrument)
    new_quantity = _decimal(quantity, "quantity", required=True)
    new_price = _decimal(price, "price", required=False) or order.price
    if new_price is None:  # pragma: no cover - a limit order has a price (checked above)
        raise OrderRejected("price is required", code="missing_price")
    rules.check_size(instrument, new_quantity)
    if new_quantity <= order.filled_quantity:
        raise OrderRejected(
            "the new quantity must exceed what is already filled", code="quantity_too_small"
        )
    if new_price != order.price:
        rules.check_price(instrument, new_price, _band(instrument))
    need = rules.hold_for(
        instrument=instrument,
        side=order.side,
        open_quantity=new_quantity - order.filled_quantity,
        price=new_price,
        fee_rate=max(order.maker_fee_rate, order.taker_fee_rate),  # the order's own rates
    )
    extra = max(need - order.held, Decimal(0))
    if extra:
        _hold(account=order.account, order=order, amount=extra, memo="replace")
        Order.objects.filter(pk=order.pk).update(held_for_replace=F("held_for_replace") + extra)
    _command(
        order,
        type=REPLACE,
        data={
            "quantity": f"{new_quantity.normalize():f}",
            "price": f"{new_price.normalize():f}",
            "extra_hold": f"{extra.normalize():f}",
        },
    )
    return order


@transaction.atomic(durable=True)
def cancel_all(*, account: Account, symbol: str | None = None) -> list[Order]:
    """Ask the matcher to cancel every open order of the account (on one instrument)."""
    accounts_lock(account_ids=[account.pk])
    open_orders = Order.objects.filter(account=account, status__in=Order.OPEN_STATUSES)
    if symbol is not None:
        open_orders = open_orders.filter(instrument=_instrument(symbol))
    ids = list(open_orders.values_list("pk", flat=True))
    orders = list(orders_lock(order_ids=ids).values())
    for order in orders:
        if order.is_open:
            _command(order, type=CANCEL, data={"quantity": None})
    return orders


@transaction.atomic(durable=True)
def day_orders_expire(*, symbols: list[str] | None = None) -> list[str]:
    """End the trading day: ask the matcher to expire every DAY order (of these instruments).

    Queues one command per instrument that is not closed; the matcher expires the DAY orders
    in that book when it reaches it, releasing their holds. Returns the symbols.
    """
    instruments = Instrument.objects.exclude(status=Instrument.Status.CLOSED)
    if symbols is not None:
        instruments = instruments.filter(symbol__in=[s.strip().upper() for s in symbols])
    chosen = list(instruments.order_by("symbol").values_list("symbol", flat=True))
    Outbox.objects.bulk_create(
        [_outbox(type=EXPIRE_DAY, symbol=symbol, seq=0, data={}) for symbol in chosen]
    )
    return chosen


def reference_prices_set(*, prices: dict[str, Decimal]) -> int:
    """Set instruments' reference prices (the reference feed calls this as it saves its prices;
    in the caller's transaction). Returns how many instruments it set; unknown symbols and
    prices that are not positive are skipped."""
    now = timezone.now()
    done = 0
    for symbol, price in prices.items():
        if price is None or not price > 0:
            continue
        done += Instrument.objects.filter(symbol=symbol).update(
            reference_price=price, reference_price_at=now
        )
    return done


@transaction.atomic(durable=True)
def instrument_status_set(*, symbol: str, status: str) -> Instrument:
    """Halt, resume or close an instrument. Raises UnknownInstrument or TradingError."""
    if status not in Instrument.Status.values:
        raise TradingError(f"unknown status {status!r}", code="invalid_status")
    instrument = _instrument(symbol)
    Instrument.objects.filter(pk=instrument.pk).update(status=status)
    instrument.status = status
    return instrument


def floor_quantity(instrument: Instrument, value: Decimal) -> Decimal:
    """Round a quantity down to the instrument's lot size (for bots and the UI)."""
    lots = int(value / instrument.lot_size)
    return lots * instrument.lot_size


def round_price(instrument: Instrument, value: Decimal, *, up: bool) -> Decimal:
    """Round a price to the instrument's tick, up or down."""
    ticks = value / instrument.tick_size
    whole = ticks.to_integral_value(rounding="ROUND_CEILING" if up else "ROUND_FLOOR")
    return whole * instrument.tick_size
