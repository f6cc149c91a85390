"""Placing an order: validate, hold the funds, write the order and its command, at once.

The order services never touch the book: each validates, holds the funds, writes the order
and an outbox row in one durable transaction. The relay produces the outbox to the `orders`
topic after commit, and the matcher (`trading/matching/`) applies the command. See
docs/architecture.md §4 and docs/decisions/0004-order-path-exactly-once.md.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from decimal import Decimal
from typing import Any

import psycopg
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account
from accounts.services import amount_format
from trading import rules
from trading.exceptions import ClientOrderIdConflict, OrderRejected, UnknownInstrument
from trading.matching.commands import PLACE
from trading.models import Instrument, Order
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
from trading.services.inputs import choice_input, decimal_input
from trading.units import ceil_to
from tredye import kafka

CLIENT_ORDER_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


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
    side = choice_input(side, Order.Side, "side")
    order_type = choice_input(type, Order.Type, "type")
    tif = choice_input(time_in_force, Order.TimeInForce, "time_in_force")
    if not isinstance(post_only, bool):
        raise OrderRejected("post_only must be true or false", code="invalid_post_only")
    quantity = decimal_input(quantity, "quantity", required=True)
    has_limit = order_type in (Order.Type.LIMIT, Order.Type.STOP_LIMIT)
    is_stop = order_type in (Order.Type.STOP, Order.Type.STOP_LIMIT)
    price = decimal_input(price, "price", required=has_limit)
    stop_price = decimal_input(stop_price, "stop_price", required=is_stop)
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
