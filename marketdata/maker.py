"""The market maker: a bot account that quotes levels on both sides of the reference price.

It reads the `ticks` topic (latest only, manual assignment) and, like any trader, places,
replaces and cancels its orders through `order_place`, `order_replace` and `order_cancel`.
`quotes_plan` (pure) decides what should rest; `MarketMaker.reconcile` makes the book match it.

Inventory is the maker's position in the instrument (the base it has bought net of what it
sold, from its fills), counted in lots. The side that would grow it is quoted smaller and
further away, and never for more than the limit leaves: open bids ≤ limit − inventory,
open asks ≤ limit + inventory. Shorting is impossible anyway (a sell holds base the maker
owns), so the maker is funded with base assets too (marketdata/demo.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import count

from django.db import DatabaseError, close_old_connections

from accounts.models import Account
from marketdata.stream import validate_tick
from trading.exceptions import OrderNotOpen, TradingError, UnknownOrder
from trading.models import Instrument, Order
from trading.selectors import order_open_list, position_quantity
from trading.services import cancel_all, order_cancel, order_place, order_replace
from tredye import kafka
from tredye.kafka import Envelope, EnvelopeError
from tredye.workers import Backoff, KafkaWorker

logger = logging.getLogger(__name__)

BPS = Decimal("0.0001")
BUY = Order.Side.BUY
SELL = Order.Side.SELL


@dataclass(frozen=True, slots=True)
class MakerConfig:
    """How the maker quotes; see the MARKET_MAKER_* settings."""

    levels: int = 3
    spread_bps: int = 10
    step_bps: int = 5
    level_lots: int = 10
    max_inventory_lots: int = 200
    requote_bps: int = 5
    refresh_s: float = 1.0

    @classmethod
    def from_settings(cls) -> MakerConfig:
        from django.conf import settings

        return cls(
            levels=settings.MARKET_MAKER_LEVELS,
            spread_bps=settings.MARKET_MAKER_SPREAD_BPS,
            step_bps=settings.MARKET_MAKER_STEP_BPS,
            level_lots=settings.MARKET_MAKER_LEVEL_LOTS,
            max_inventory_lots=settings.MARKET_MAKER_MAX_INVENTORY_LOTS,
            requote_bps=settings.MARKET_MAKER_REQUOTE_BPS,
            refresh_s=settings.MARKET_MAKER_REFRESH_MS / 1000,
        )


@dataclass(frozen=True, slots=True)
class Quote:
    side: str
    level: int
    price: Decimal
    quantity: Decimal


def quotes_plan(
    *,
    reference: Decimal,
    tick_size: Decimal,
    lot_size: Decimal,
    min_quantity: Decimal,
    max_quantity: Decimal | None,
    inventory_lots: int,
    config: MakerConfig,
) -> list[Quote]:
    """The quotes that should rest around `reference`, bids best first, then asks best first.

    Level i sits `spread + i × step` bps from the reference (bids rounded down, asks up, at
    least a tick apart). Long inventory shrinks the bids and pushes them away, short inventory
    does the same to the asks; a side gets no more than the limit leaves, and none at the limit.
    """
    if not reference.is_finite() or reference <= 0:
        return []
    limit = config.max_inventory_lots
    level_lots = max(config.level_lots, _lots_up(min_quantity, lot_size), 1)
    if max_quantity is not None:
        level_lots = min(level_lots, int(max_quantity / lot_size))
    if level_lots <= 0:
        return []
    quotes = []
    for side, direction, exposure in ((BUY, -1, inventory_lots), (SELL, 1, -inventory_lots)):
        # exposure > 0: filling this side grows the inventory beyond the start.
        room = limit - exposure
        lean = Decimal(max(exposure, 0)) / limit if limit > 0 else Decimal(0)
        size = level_lots if lean <= 0 else max(int(level_lots * (1 - lean)), 1)
        skew_bps = config.spread_bps * lean
        previous: Decimal | None = None
        for level in range(config.levels):
            lots = min(size, room)
            if lots <= 0 or lots * lot_size < min_quantity:
                break
            room -= lots
            distance = (config.spread_bps + level * config.step_bps + skew_bps) * BPS
            raw = reference * (1 + direction * distance) / tick_size
            ticks = raw.to_integral_value(rounding=ROUND_FLOOR if side == BUY else ROUND_CEILING)
            if side == BUY:
                ticks = min(ticks, _ticks(reference, tick_size, ROUND_CEILING) - 1)
            else:
                ticks = max(ticks, _ticks(reference, tick_size, ROUND_FLOOR) + 1)
            price = ticks * tick_size
            if previous is not None and direction * (price - previous) < tick_size:
                price = previous + direction * tick_size
            if price <= 0:
                break
            previous = price
            quotes.append(Quote(side, level, price, lots * lot_size))
    return quotes


def _lots_up(quantity: Decimal, lot_size: Decimal) -> int:
    return int((quantity / lot_size).to_integral_value(rounding=ROUND_CEILING))


def _ticks(price: Decimal, tick_size: Decimal, rounding: str) -> Decimal:
    return (price / tick_size).to_integral_value(rounding=rounding)


def tick_reference(envelope: Envelope) -> tuple[str, Decimal]:
    """The symbol and reference (last) price of a tick; raise EnvelopeError when it is bad."""
    data = validate_tick(envelope)
    last = Decimal(data["last"])
    if last <= 0:
        raise EnvelopeError("tick price is not positive")
    return envelope.key, last


class MarketMaker:
    """Keeps one account's quotes in line with the plan, one instrument at a time."""

    def __init__(
        self, *, account: Account, config: MakerConfig, symbols: Iterable[str] | None = None
    ) -> None:
        self.account = account
        self.config = config
        self.symbols = set(symbols) if symbols else None
        self.instruments: dict[str, Instrument | None] = {}
        self.references: dict[str, Decimal] = {}
        # The reference the resting quotes were priced on; moved only past requote_bps.
        self.anchors: dict[str, Decimal] = {}
        self.checked_at: dict[str, float] = {}
        self.quoted: set[str] = set()
        self.run_id = f"mm{int(time.time() * 1000):x}"
        self.numbers = count(1)
        self.placed = self.replaced = self.canceled = self.refused = 0
        # While PostgreSQL is away the maker skips its checks until `paused_until`, backing off.
        self.backoff = Backoff()
        self.paused_until = 0.0

    def instrument(self, symbol: str) -> Instrument | None:
        if self.symbols is not None and symbol not in self.symbols:
            return None
        if symbol not in self.instruments:
            self.instruments[symbol] = Instrument.objects.filter(symbol=symbol).first()
        return self.instruments[symbol]

    def on_reference(self, symbol: str, price: Decimal, now: float) -> None:
        """Take a new reference price and requote if it moved far enough."""
        if now < self.paused_until:
            return
        try:
            if self.instrument(symbol) is None:
                return
        except DatabaseError as error:
            self._database_failed(symbol, error)
            return
        if symbol not in self.references:
            logger.info("market maker: quoting %s around %s", symbol, price)
        self.references[symbol] = price
        anchor = self.anchors.get(symbol)
        moved = anchor is None or abs(price - anchor) >= anchor * self.config.requote_bps * BPS
        if moved:
            self.anchors[symbol] = price
        if moved or now - self.checked_at.get(symbol, 0.0) >= self.config.refresh_s:
            self.reconcile_safely(symbol, now)

    def refresh_due(self, now: float) -> None:
        """Re-check symbols not checked for refresh_s (fills, orders pending acceptance)."""
        for symbol in list(self.anchors):
            if now - self.checked_at.get(symbol, 0.0) >= self.config.refresh_s:
                self.reconcile_safely(symbol, now)

    def reconcile_safely(self, symbol: str, now: float) -> None:
        if now < self.paused_until:
            return
        self.checked_at[symbol] = now
        try:
            self.reconcile(symbol)
        except DatabaseError as error:
            self._database_failed(symbol, error)
        else:
            if self.backoff.attempt:
                logger.info("market maker: database back; quoting again")
                self.backoff.reset()

    def _database_failed(self, symbol: str, error: DatabaseError) -> None:
        """A lost connection or a database away: log, drop the connection, back off."""
        delay = self.backoff.next_delay()
        self.paused_until = time.monotonic() + delay
        logger.warning(
            "market maker: %s not requoted: database error (%s); retrying in %.1fs",
            symbol,
            str(error).strip(),
            delay,
        )
        close_old_connections()  # a broken connection is replaced at the next use

    def reconcile(self, symbol: str) -> None:
        """Replace, place and cancel this account's orders so the book shows the plan."""
        instrument = self.instrument(symbol)
        anchor = self.anchors.get(symbol)
        if instrument is None or anchor is None:
            return
        instrument.refresh_from_db(fields=["status", "min_quantity", "max_quantity"])
        orders = list(order_open_list(account=self.account, instrument=instrument))
        if any(order.status == Order.Status.PENDING_NEW for order in orders):
            return  # wait for the matcher to accept them: replacing needs a live order
        if instrument.status != Instrument.Status.OPEN:
            return
        inventory = position_quantity(account=self.account, instrument=instrument)
        plan = quotes_plan(
            reference=anchor,
            tick_size=instrument.tick_size,
            lot_size=instrument.lot_size,
            min_quantity=instrument.min_quantity,
            max_quantity=instrument.max_quantity,
            inventory_lots=int(inventory / instrument.lot_size),
            config=self.config,
        )
        resting = {
            BUY: sorted((o for o in orders if o.side == BUY), key=lambda o: (-_limit(o), o.pk)),
            SELL: sorted((o for o in orders if o.side == SELL), key=lambda o: (_limit(o), o.pk)),
        }
        wanted = {side: [q for q in plan if q.side == side] for side in (BUY, SELL)}
        # Move the side that gets out of the way first, so new quotes never cross old ones.
        best_bid = resting[BUY][0].price if resting[BUY] else None
        rising = best_bid is not None and wanted[BUY] and wanted[BUY][0].price > best_bid
        for side in (SELL, BUY) if rising else (BUY, SELL):
            self._side(instrument, resting[side], wanted[side])
        self.quoted.add(symbol)

    def _side(self, instrument: Instrument, resting: list[Order], wanted: list[Quote]) -> None:
        for index, quote in enumerate(wanted):
            if index < len(resting):
                order = resting[index]
                open_quantity = order.quantity - order.filled_quantity
                if order.price == quote.price and open_quantity == quote.quantity:
                    continue
                self._call(
                    order_replace,
                    account=self.account,
                    order_id=order.pk,
                    quantity=order.filled_quantity + quote.quantity,
                    price=quote.price,
                )
                self.replaced += 1
            else:
                self._call(
                    order_place,
                    account=self.account,
                    symbol=instrument.symbol,
                    client_order_id=f"{self.run_id}-{next(self.numbers)}",
                    side=quote.side,
                    quantity=quote.quantity,
                    price=quote.price,
                )
                self.placed += 1
        for order in resting[len(wanted) :]:
            self._call(order_cancel, account=self.account, order_id=order.pk)
            self.canceled += 1

    def _call(self, service, **arguments) -> None:  # noqa: ANN001
        try:
            service(**arguments)
        except (OrderNotOpen, UnknownOrder):
            pass  # filled or closed meanwhile: the next check sees it
        except TradingError as error:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                logger.warning(
                    "market maker: %s refused (%s: %s); %d refusals so far",
                    service.__name__,
                    error.code,
                    error.detail,
                    self.refused,
                )

    def withdraw_all(self) -> None:
        """Cancel every quote of the symbols it quoted (on a clean stop)."""
        for symbol in sorted(self.quoted):
            try:
                cancel_all(account=self.account, symbol=symbol)
            except (TradingError, DatabaseError) as error:
                logger.warning("market maker: could not cancel %s quotes: %s", symbol, error)


def _limit(order: Order) -> Decimal:
    """The limit price of one of the maker's orders (it places limit orders only)."""
    if order.price is None:  # pragma: no cover - the maker's orders are limit orders
        raise RuntimeError(f"the market maker's order {order.pk} has no limit price")
    return order.price


class MarketMakerWorker(KafkaWorker):
    """Reference ticks in (newest per symbol per poll), quotes out through the services."""

    name = "market-maker"
    topics = (kafka.TICKS,)
    start_at = "latest"

    def __init__(self, maker: MarketMaker, *, cancel_on_stop: bool = True) -> None:
        super().__init__()
        self.maker = maker
        self.cancel_on_stop = cancel_on_stop

    def decode(self, raw: bytes | None) -> tuple[str, Decimal]:
        return tick_reference(kafka.decode(raw))

    def handle(self, items: list[tuple[str, Decimal]]) -> None:
        latest = dict(items)
        now = time.monotonic()
        for symbol, price in latest.items():
            self.maker.on_reference(symbol, price, now)

    def tick(self, now: float) -> None:
        self.maker.refresh_due(now)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.cancel_on_stop:
                self.maker.withdraw_all()
            logger.info(
                "market maker: %d placed, %d replaced, %d canceled, %d refused",
                self.maker.placed,
                self.maker.replaced,
                self.maker.canceled,
                self.maker.refused,
            )
