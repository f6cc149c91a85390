"""Row locks for trading, in the global order account → instrument → order → position."""

from __future__ import annotations

from collections.abc import Iterable

from trading.models import Order


def orders_lock(*, order_ids: Iterable[int]) -> dict[int, Order]:
    """Lock these orders (FOR NO KEY UPDATE, in pk order) and return them freshly read."""
    locked = (
        Order.objects.select_for_update(no_key=True, of=("self",))
        .filter(pk__in=sorted(set(order_ids)))
        .select_related("instrument__base", "instrument__quote")
        .order_by("pk")
    )
    return {order.pk: order for order in locked}
