"""The books: each instrument's engine book, Decimal <-> ticks and lots, and its rebuild from
the open orders in PostgreSQL in their stored priority. The engine (trading/engine/) owns its
order and snapshot formats; this module only converts to and from them."""

from __future__ import annotations

import logging
from decimal import ROUND_FLOOR, Context, Decimal
from typing import Any

from trading.engine import Order as EngineOrder
from trading.engine import (
    OrderBook,
)
from trading.engine import OrderType as EngineType
from trading.engine import Side as EngineSide
from trading.engine import TimeInForce as EngineTif
from trading.models import (
    BookState,
    Instrument,
    Order,
)
from trading.units import NotAMultiple, steps

logger = logging.getLogger(__name__)

_WIDE = Context(prec=60)
_TIF = {
    "gtc": EngineTif.GTC,
    "ioc": EngineTif.IOC,
    "fok": EngineTif.FOK,
    "day": EngineTif.DAY,
}
_OPEN = (Order.Status.NEW, Order.Status.PARTIALLY_FILLED)
# Why the matcher closes an order that is off the book's grid (a tick or lot size changed).
RULES_CHANGED = "rules_changed"


_LIVE_FIELDS = (
    "status",
    "reason",
    "quantity",
    "price",
    "filled_quantity",
    "filled_notional",
    "filled_quote",
    "average_price",
    "fees",
    "held",
    "book_seq",
    "applied_seq",
    "accepted_at",
    "triggered_at",
    "last_fill_at",
    "closed_at",
    "updated_at",
)


class Book:
    """One instrument's engine book and what the matcher knows of its live orders."""

    def __init__(self, instrument: Instrument, state: BookState) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.tick = instrument.tick_size
        self.lot = instrument.lot_size
        self.quote_precision = instrument.quote.precision
        self.state = state
        self.orders: dict[int, Order] = {}
        self.engine = OrderBook(self.symbol)
        self.deltas: dict[tuple[int, int], int] = {}
        # Book deltas in prices and quantities, kept when the units above change mid-batch.
        self.level_deltas: dict[tuple[int, Decimal], Decimal] = {}
        # Open orders off the book's grid when it was rebuilt (a tick or lot size changed
        # under them): closed by the next batch.
        self.off_grid: list[Order] = []
        self.dirty = False

    def ticks(self, price: Decimal) -> int:
        return steps(price, self.tick)

    def last_ticks(self) -> int | None:
        """The last trade price in ticks (what stops trigger on), rounded down to the grid: a
        tick size changed since the last trade may not divide it."""
        last = self.state.last_price
        if last is None:
            return None
        return int(_WIDE.divide(last, self.tick).to_integral_value(rounding=ROUND_FLOOR))

    def rules_set(self, rules: dict[str, Decimal | None]) -> None:
        """Take new rules. A new tick or lot size needs an engine without orders (their prices
        and sizes are counted in the old units): it starts again empty, and the deltas not yet
        published are kept in prices and quantities."""
        for name, value in rules.items():
            setattr(self.instrument, name, value)
        if (self.instrument.tick_size, self.instrument.lot_size) == (self.tick, self.lot):
            return
        for (side, price), qty in self.deltas.items():
            self.level_deltas[(side, price * self.tick)] = qty * self.lot
        self.deltas = {}
        self.tick = self.instrument.tick_size
        self.lot = self.instrument.lot_size
        self.engine = OrderBook.restore(
            {
                "version": 1,
                "symbol": self.symbol,
                "stp": "CANCEL_NEWEST",
                "last_price": self.last_ticks(),
                "trade_seq": self.engine.snapshot()["trade_seq"],
                "resting": [],
                "stops": [],
            }
        )

    def lots(self, quantity: Decimal) -> int:
        return steps(quantity, self.lot)

    def engine_order(self, order: Order, open_quantity: Decimal) -> EngineOrder:
        """The engine's view of an order: markets run as limit IOC/FOK at the protection price."""
        tif = _TIF[order.time_in_force]
        stop = None if order.stop_price is None else self.ticks(order.stop_price)
        if order.type in (Order.Type.MARKET, Order.Type.STOP):
            limit = order.protection_price
            tif = EngineTif.FOK if tif is EngineTif.FOK else EngineTif.IOC
        else:
            limit = order.price
        if limit is None:  # the database's check constraints make this impossible
            raise ValueError(f"order {order.pk} has no price to rest or run at")
        price = self.ticks(limit)
        kind = EngineType.LIMIT if stop is None else EngineType.STOP_LIMIT
        return EngineOrder(
            order.pk,
            order.account_id,
            EngineSide.BUY if order.side == Order.Side.BUY else EngineSide.SELL,
            kind,
            self.lots(open_quantity),
            price,
            stop,
            tif,
            order.post_only,
        )

    def rebuild(self) -> None:
        """Load the open orders of PostgreSQL into a fresh engine book, in priority order."""
        orders = list(
            Order.objects.filter(instrument=self.instrument, status__in=_OPEN).order_by(
                "book_seq", "pk"
            )
        )
        resting: list[dict[str, Any]] = []
        stops: list[dict[str, Any]] = []
        self.off_grid = []
        for order in orders:
            try:
                engine = self.engine_order(order, order.quantity - order.filled_quantity)
            except NotAMultiple:
                # Placed under other rules (a tick or lot size changed under it, which the
                # service and the database refuse): closed by the next batch.
                logger.warning("matcher: order %s is off the %s grid", order.pk, self.symbol)
                self.off_grid.append(order)
                self.orders[order.pk] = order
                continue
            row = {
                "id": engine.id,
                "account_id": engine.account_id,
                "side": engine.side.name,
                "type": engine.type.name,
                "qty": engine.qty,
                "price": engine.price,
                "stop_price": engine.stop_price,
                "tif": engine.tif.name,
                "post_only": engine.post_only,
            }
            is_pending_stop = order.stop_price is not None and order.triggered_at is None
            (stops if is_pending_stop else resting).append(row)
            self.orders[order.pk] = order
        last = self.last_ticks()
        self.engine = OrderBook.restore(
            {
                "version": 1,
                "symbol": self.symbol,
                "stp": "CANCEL_NEWEST",
                "last_price": last,
                "trade_seq": self.state.trade_seq,
                "resting": resting,
                "stops": stops,
            }
        )
        logger.info(
            "matcher: %s rebuilt with %d open orders, trade seq %d",
            self.symbol,
            len(orders),
            self.state.trade_seq,
        )
