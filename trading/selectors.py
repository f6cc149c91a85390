"""Reads for trading: reference prices, a trader's orders, trades and positions."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Account
from trading.models import Instrument, Order, Outbox, Position, Trade
from trading.placement import reference_price_read
from tredye import kafka
from tredye.status import Degraded


def reference_price(*, instrument: Instrument) -> Decimal | None:
    """The price the band is centred on now: the reference feed's, else the last trade."""
    return reference_price_read(instrument_id=instrument.pk)


def order_list(*, account: Account, open_only: bool = False, limit: int = 100) -> QuerySet[Order]:
    """The account's orders, newest first."""
    orders = Order.objects.filter(account=account).select_related("instrument")
    if open_only:
        orders = orders.filter(status__in=Order.OPEN_STATUSES)
    return orders.order_by("-pk")[:limit]


def order_get(*, account: Account, order_id: int) -> Order | None:
    """One of the account's orders, or None (another account's order is None too)."""
    return Order.objects.filter(account=account, pk=order_id).select_related("instrument").first()


def trade_list(
    *,
    account: Account,
    instrument: Instrument | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Trade]:
    """The account's fills, newest first by trade id, only those older than `before_id` when
    given (the keyset of the trades endpoint's cursor: a page does not move when trades arrive,
    since new trades get higher ids), on one instrument when given. With the maker and taker
    orders (the account's order id and client order id) and the quote asset (the fee's)."""
    sides = []
    for side in ("buyer", "seller"):
        # One index scan per side (`trade_buyer_recent`, `trade_seller_recent`), each stopping
        # after `limit` rows: an OR of both would read all of a busy account's trades to sort.
        mine = Trade.objects.filter(**{side: account})
        if instrument is not None:
            mine = mine.filter(instrument=instrument)
        if before_id is not None:
            mine = mine.filter(pk__lt=before_id)
        sides.append(mine.order_by("-pk").values_list("pk", flat=True)[:limit])
    ids = list(sides[0].union(sides[1], all=True).order_by("-pk")[:limit])
    return list(
        Trade.objects.filter(pk__in=ids)
        .select_related("instrument__quote", "maker_order", "taker_order")
        .order_by("-pk")
    )


def position_list(*, account: Account) -> QuerySet[Position]:
    return Position.objects.filter(account=account).select_related("instrument")


def order_open_list(*, account: Account, instrument: Instrument) -> QuerySet[Order]:
    """The account's open orders on one instrument (pending acceptance included), oldest first."""
    return Order.objects.filter(
        account=account, instrument=instrument, status__in=Order.OPEN_STATUSES
    ).order_by("pk")


def position_quantity(*, account: Account, instrument: Instrument) -> Decimal:
    """The account's net base quantity from trading the instrument (0 without a position)."""
    quantity = (
        Position.objects.filter(account=account, instrument=instrument)
        .values_list("quantity", flat=True)
        .first()
    )
    return quantity if quantity is not None else Decimal(0)


def order_queue_age_s() -> float | None:
    """Seconds the oldest command has waited for the matcher to apply it (None: none waits)."""
    oldest = (
        Outbox.objects.filter(topic=kafka.ORDERS, applied_at__isnull=True)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if oldest is None:
        return None
    return max(0.0, (timezone.now() - oldest).total_seconds())


def order_queue_degraded() -> list[Degraded]:
    """The order path as a trader sees it: commands accepted but not yet matched."""
    age = order_queue_age_s()
    if age is None or age <= settings.ORDERS_QUEUED_AFTER_S:
        return []
    return [
        Degraded(
            "matcher",
            "queued",
            "Orders are queued: the matching service is not keeping up.",
            round(age, 1),
        )
    ]
