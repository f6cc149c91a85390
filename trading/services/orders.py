"""Changing orders already placed: cancel, replace, cancel all, and the end of the day.

Each locks the account and the order, checks, and writes a command for the matcher in the
same durable transaction (`_command`); a replace that needs more funds holds them first.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.exceptions import AccountFrozen, InsufficientFunds, LedgerError
from accounts.lock_objects import accounts_lock
from accounts.models import Account
from accounts.services import funds_hold
from trading import rules
from trading.exceptions import OrderNotOpen, OrderRejected, UnknownOrder
from trading.lock_objects import orders_lock
from trading.matching.commands import CANCEL, EXPIRE_DAY, REPLACE
from trading.models import Instrument, Order, Outbox
from trading.selectors import reference_price
from trading.services.inputs import decimal_input
from trading.services.instruments import instrument_get
from tredye import kafka


def _band(instrument: Instrument) -> rules.Band | None:
    """The band around the reference price read now."""
    return rules.band_around(instrument, reference_price(instrument=instrument))


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
    reduce_by = decimal_input(quantity, "quantity", required=False)
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
    quantity: Decimal | str | None,
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
    new_quantity = decimal_input(quantity, "quantity", required=True)
    new_price = decimal_input(price, "price", required=False) or order.price
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
        open_orders = open_orders.filter(instrument=instrument_get(symbol))
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
