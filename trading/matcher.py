"""The matcher: the single writer of the books, their orders, trades, fills and positions.

It consumes the `orders` topic by manual partition assignment and applies each batch of
commands to in-memory books (trading.engine), then commits everything the batch caused in ONE
transaction ("group commit"): order states, trades, ledger entries, positions, outgoing events
(as outbox rows), the commands it applied (`Outbox.applied_at`) and the consumed offset with
the topic's id (`MatcherCheckpoint`). After commit, the relay in this process produces the
events. On start, a book is rebuilt from the open orders in PostgreSQL in their stored
priority, and each partition is read from checkpoint + 1 if the checkpoint belongs to this very
topic, else from its start. A command already applied (by its outbox id) is skipped wherever
it arrives: re-delivery never double-fills (docs/decisions/0009).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from accounts.models import Account, Bucket, EntryKind
from accounts.services import EntrySpec, Leg, ledger_post, platform_account_open
from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    Expired,
    OrderBook,
    Rejected,
    Replaced,
    Trade,
    Triggered,
)
from trading.engine import Order as EngineOrder
from trading.engine import OrderType as EngineType
from trading.engine import Side as EngineSide
from trading.engine import TimeInForce as EngineTif
from trading.matching.commands import (
    BOOK_COMMANDS,
    CANCEL,
    EXPIRE_DAY,
    PLACE,
    REPLACE,
    RULES_CHANGE,
    Command,
    command_decode,
)
from trading.messages import order_message
from trading.models import (
    BookState,
    Instrument,
    MatcherCheckpoint,
    Order,
    Outbox,
    Position,
    StreamSequence,
)
from trading.models import Trade as TradeRow
from trading.outbox import Lanes, Relay, outbox_id
from trading.rules import hold_asset
from trading.units import ZERO, NotAMultiple, buy_hold, fee, fill_amount, plain, steps
from tredye import db, kafka
from tredye.db import compact, instances_fetch, prepared_cursor, select_columns
from tredye.kafka import EnvelopeError
from tredye.workers import KafkaWorker

logger = logging.getLogger(__name__)

_WIDE = Context(prec=60)
_AVG = Decimal(1).scaleb(-10)
_COST = Decimal(1).scaleb(-18)
EVENT_TOPICS = (kafka.TRADES, kafka.BOOK, kafka.ACCOUNT_EVENTS)
_TIF = {
    "gtc": EngineTif.GTC,
    "ioc": EngineTif.IOC,
    "fok": EngineTif.FOK,
    "day": EngineTif.DAY,
}
_OPEN = (Order.Status.NEW, Order.Status.PARTIALLY_FILLED)
# Why the matcher closes an order that is off the book's grid (a tick or lot size changed).
RULES_CHANGED = "rules_changed"


# ---------------------------------------------------------------------------------------------
# In-memory state
# ---------------------------------------------------------------------------------------------

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
            price = self.ticks(order.protection_price)
            tif = EngineTif.FOK if tif is EngineTif.FOK else EngineTif.IOC
        else:
            price = self.ticks(order.price)
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
        resting, stops = [], []
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


@dataclass(slots=True)
class TradeFill:
    """A trade row as `batch_write` inserts it (the columns of `_TRADE_COLUMNS`); a model
    instance per fill cost more than the rest of the fill's bookkeeping."""

    instrument_id: int
    seq: int
    maker_order_id: int
    taker_order_id: int
    buyer_id: int
    seller_id: int
    price: Decimal
    quantity: Decimal
    quote_amount: Decimal
    aggressor_side: str
    buyer_fee: Decimal
    seller_fee: Decimal
    executed_at: Any


@dataclass(slots=True)
class EventRow:
    """An outbox row as `batch_write` inserts it."""

    topic: str
    key: str
    type: str
    seq: int
    ts: int
    data: dict[str, Any]


@dataclass
class BatchResult:
    """Everything one batch writes, gathered before the transaction."""

    now: Any
    changed: dict[int, Order] = field(default_factory=dict)
    trades: list[TradeFill] = field(default_factory=list)
    entries: list[EntrySpec] = field(default_factory=list)
    positions: dict[tuple[int, int], Position] = field(default_factory=dict)
    account_orders: dict[int, dict[int, Order]] = field(default_factory=lambda: defaultdict(dict))
    account_trades: dict[int, list[dict]] = field(default_factory=lambda: defaultdict(list))
    trade_messages: list[EventRow] = field(default_factory=list)
    checkpoints: dict[int, int] = field(default_factory=dict)
    # Outbox ids of the batch's commands: marked applied in its transaction.
    applied: list[int] = field(default_factory=list)
    dead: list[tuple[Any, str]] = field(default_factory=list)
    # Every order the batch's commands name (a closed one leaves its book but stays here).
    orders: dict[int, Order] = field(default_factory=dict)
    # Extra hold each order's replace moved out of `held_for_replace`.
    replace_holds: dict[int, Decimal] = field(default_factory=dict)


class Matcher:
    """Applies commands to books and writes their effects; no Kafka consumer in here."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        self.positions: dict[tuple[int, int], Position] = {}
        self.fees_account: Account | None = None
        self.accounts: dict[int, Account] = {}
        self.stream_seq: dict[tuple[str, str], int] = {}
        self.topic = kafka.topic(kafka.ORDERS)
        # The broker's id of the topic being read, written with the checkpoint.
        self.topic_id = ""

    # -- state ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every in-memory state; it is reloaded from PostgreSQL on demand."""
        self.books.clear()
        self.positions.clear()
        self.stream_seq.clear()

    def checkpoints_with_ids(self) -> dict[int, tuple[int, str]]:
        """Per partition: the last applied offset and the id of the topic it belongs to."""
        rows = MatcherCheckpoint.objects.filter(topic=self.topic).values_list(
            "partition", "offset", "topic_id"
        )
        return {partition: (offset, topic_id) for partition, offset, topic_id in rows}

    def book(self, symbol: str) -> Book | None:
        book = self.books.get(symbol)
        if book is None:
            instrument = (
                Instrument.objects.select_related("base", "quote").filter(symbol=symbol).first()
            )
            if instrument is None:
                return None
            state, _ = BookState.objects.get_or_create(instrument=instrument)
            book = Book(instrument, state)
            book.rebuild()
            self.books[symbol] = book
        return book

    def account(self, account_id: int) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            account = Account(pk=account_id, kind=Account.Kind.CUSTOMER)
            self.accounts[account_id] = account
        return account

    def _fees(self) -> Account:
        if self.fees_account is None:
            with transaction.atomic():
                self.fees_account = platform_account_open(kind=Account.Kind.FEES)
        return self.fees_account

    # -- a batch --------------------------------------------------------------------------
    def run_batch(self, commands: list[Command]) -> BatchResult:
        """Apply the commands and commit their effects in one transaction."""
        result = BatchResult(now=timezone.now())
        ts = kafka.now_ms()
        for command in commands:
            result.checkpoints[command.partition] = max(
                result.checkpoints.get(command.partition, -1), command.offset
            )
        fresh = self._unapplied(commands, result)
        self._fees()
        unknown = self._load_orders(fresh, result)
        for book in self.books.values():
            while book.off_grid:
                order = book.off_grid.pop()
                result.orders[order.pk] = order
                self._close(book, order, Order.Status.CANCELED, RULES_CHANGED, result)
        for command in fresh:
            if command.kind in BOOK_COMMANDS and command.symbol not in self.books:
                result.dead.append((command.record, f"unknown instrument {command.symbol!r}"))
                continue
            if command.order_id in unknown:
                result.dead.append((command.record, unknown[command.order_id]))
                continue
            book = self.books[command.symbol]
            self._apply(book, command, result, ts)
        self._commit(result)
        return result

    def _unapplied(self, commands: list[Command], result: BatchResult) -> list[Command]:
        """The commands to apply: not poison, and not applied before.

        A command sent from the outbox is applied at most once by its outbox id, whatever offset
        it arrives at: the relay sends a command again when the broker may have lost it, and a
        broker that came back empty starts its offsets again. A record without that id (not
        sent by the relay) relies on the order's own state: a place only while PENDING_NEW, a
        cancel or replace only with a number above the order's `applied_seq`.
        """
        ids = [c.outbox_id for c in commands if c.outbox_id is not None and c.kind != "skip"]
        done = set()
        if ids:
            rows = prepared_cursor().execute(_APPLIED, {"ids": ids}, prepare=True).fetchall()
            done = {row[0] for row in rows}
        fresh = []
        for command in commands:
            if command.outbox_id is not None:
                result.applied.append(command.outbox_id)
            if command.kind == "skip":
                continue
            if command.outbox_id is not None:
                if command.outbox_id in done:
                    continue  # applied before: a duplicate
                done.add(command.outbox_id)  # twice in this batch
            fresh.append(command)
        return fresh

    def _load_orders(self, commands: list[Command], result: BatchResult) -> dict[int, str]:
        """Make sure each command's book and order are in memory; return the unknown ones."""
        unknown: dict[int, str] = {}
        wanted: dict[int, Command] = {}
        for command in commands:
            book = self.book(command.symbol)
            if command.kind in BOOK_COMMANDS:
                continue  # names no order
            if book is None:
                unknown[command.order_id] = f"unknown instrument {command.symbol!r}"
                continue
            order = book.orders.get(command.order_id)
            if order is None:
                wanted.setdefault(command.order_id, command)
            else:
                result.orders[order.pk] = order
        if wanted:
            # No join: the command's book already holds the instrument the order must be on.
            found = {
                order.pk: order
                for order in instances_fetch(Order, _ORDERS_BY_ID, {"ids": list(wanted)})
            }
            for order_id, command in wanted.items():
                order = found.get(order_id)
                book = self.books[command.symbol]
                if order is None:
                    unknown[order_id] = f"unknown order {order_id}"
                elif order.instrument_id != book.instrument.pk:
                    unknown[order_id] = f"order {order_id} is not on {command.symbol}"
                else:
                    order.instrument = book.instrument
                    result.orders[order_id] = order
                    if order.status in Order.OPEN_STATUSES:
                        self.books[command.symbol].orders[order_id] = order
        return unknown

    # -- applying commands ----------------------------------------------------------------
    def _apply(self, book: Book, command: Command, result: BatchResult, ts: int) -> None:
        if command.kind == EXPIRE_DAY:
            # Only DAY orders already in the book: a re-delivery is skipped by the checkpoint.
            self._events(book, book.engine.expire_day(ts), result)
            return
        if command.kind == RULES_CHANGE:
            self._rules(book, command, result, ts)
            return
        order = result.orders[command.order_id]
        if command.kind == PLACE:
            if order.status != Order.Status.PENDING_NEW:
                return  # applied before (re-delivery)
            try:
                engine_order = book.engine_order(order, order.quantity)
            except NotAMultiple:
                # Validated under rules that changed before it reached the book.
                self._close(book, order, Order.Status.REJECTED, RULES_CHANGED, result)
                return
            events = book.engine.submit(engine_order, ts)
            self._events(book, events, result, place_id=order.pk)
            return
        late = command.seq <= order.applied_seq
        if late and command.outbox_id is None:
            return  # applied before (a record without an outbox id cannot be told apart)
        if late and command.kind == REPLACE:
            # Unapplied, but a later command of the order came first (this one was lost and
            # sent again): superseded, so its extra hold goes back.
            if command.extra_hold:
                order.held += command.extra_hold
                result.replace_holds[order.pk] = (
                    result.replace_holds.get(order.pk, ZERO) + command.extra_hold
                )
                self._release(book, order, command.extra_hold, result)
                self._touch(order, result)
            return
        if not late:  # a late cancel still cancels what is left
            order.applied_seq = command.seq
        self._touch(order, result)
        if command.extra_hold:
            # The replace's extra hold now belongs to the order (released below if unused).
            order.held += command.extra_hold
            result.replace_holds[order.pk] = (
                result.replace_holds.get(order.pk, ZERO) + command.extra_hold
            )
        if order.status in Order.FINAL_STATUSES:
            self._release(book, order, order.held, result)
            return
        if command.kind == CANCEL:
            self._cancel(book, order, command, result, ts)
        else:
            self._replace(book, order, command, result, ts)

    def _cancel(
        self, book: Book, order: Order, command: Command, result: BatchResult, ts: int
    ) -> None:
        reduce_lots = None
        if command.quantity is not None:
            try:
                reduce_lots = book.lots(command.quantity)
            except ValueError:
                return
        if order.status == Order.Status.PENDING_NEW:
            # Canceled before the matcher saw the order: it never reaches the book.
            try:
                open_lots = book.lots(order.quantity)
            except ValueError:  # off the grid (the lot size changed): canceled whole
                open_lots = 0
            if reduce_lots is None or reduce_lots >= open_lots:
                self._close(book, order, Order.Status.CANCELED, "user", result)
            else:
                order.quantity -= reduce_lots * book.lot
                self._release_surplus(book, order, result)
            return
        events = book.engine.cancel(order.pk, reduce_lots, ts)
        self._events(book, events, result)

    def _replace(
        self, book: Book, order: Order, command: Command, result: BatchResult, ts: int
    ) -> None:
        if order.status == Order.Status.PENDING_NEW:
            return  # the service refuses this; a forged command changes nothing
        try:
            open_quantity = command.quantity - order.filled_quantity
            open_lots = book.lots(open_quantity)
            price_ticks = book.ticks(command.price)
        except ValueError:
            return
        if open_lots <= 0:
            return
        need = self._need(book, order, open_quantity, command.price)
        if need > order.held:
            order.reason = "replace_insufficient_hold"
            return
        events = book.engine.replace(order.pk, open_lots, price_ticks, ts)
        self._events(book, events, result)

    # -- events ---------------------------------------------------------------------------
    def _events(
        self, book: Book, events: list, result: BatchResult, place_id: int | None = None
    ) -> None:
        now = result.now
        for event in events:
            kind = type(event)
            if kind is BookDelta:
                book.deltas[(int(event.side), event.price)] = event.qty
            elif kind is Trade:
                self._trade(book, event, result)
            elif kind is Accepted:
                order = book.orders[event.order_id]
                order.status = Order.Status.NEW
                order.accepted_at = now
                self._priority(book, order)
                self._touch(order, result)
            elif kind is Canceled:
                order = book.orders[event.order_id]
                if event.remaining == 0:
                    self._close(book, order, Order.Status.CANCELED, event.reason, result)
                else:
                    order.quantity -= event.qty * book.lot
                    self._release_surplus(book, order, result)
                    self._touch(order, result)
            elif kind is Rejected:
                order = book.orders[event.order_id]
                if event.order_id == place_id and order.status == Order.Status.PENDING_NEW:
                    self._close(book, order, Order.Status.REJECTED, event.reason, result)
                else:  # a refused cancel or replace: the order stays as it was
                    order.reason = event.reason
                    self._touch(order, result)
            elif kind is Expired:
                order = book.orders[event.order_id]
                self._close(book, order, Order.Status.EXPIRED, "day", result)
            elif kind is Triggered:
                order = book.orders[event.order_id]
                order.triggered_at = now
                self._priority(book, order)
                self._touch(order, result)
            elif kind is Replaced:
                order = book.orders[event.order_id]
                order.quantity = order.filled_quantity + event.qty * book.lot
                if event.price is not None and order.price is not None:
                    order.price = event.price * book.tick
                if event.price != event.old_price or event.qty > event.old_qty:
                    self._priority(book, order)
                order.reason = ""
                self._release_surplus(book, order, result)
                self._touch(order, result)

    def _rules(self, book: Book, command: Command, result: BatchResult, ts: int) -> None:
        """New rules from this point of the book's command sequence on (trading/reference.py).

        Fee rates and size limits need nothing here: each order carries the fee rates it was
        placed under, and limits are checked at placement. A new tick or lot size changes the
        engine's units: whatever is still in the book then (the service refuses the change under
        open orders, so only an order that raced it) is canceled first,
        in the old units; orders still to come that are off the new grid are rejected.
        """
        rules = command.rules or {}
        if rules.get("tick_size") != book.tick or rules.get("lot_size") != book.lot:
            snapshot = book.engine.snapshot()
            for row in (*snapshot["resting"], *snapshot["stops"]):
                self._events(book, book.engine.cancel(row["id"], None, ts), result)
                order = result.changed.get(row["id"])
                if order is not None:
                    order.reason = RULES_CHANGED
            logger.warning(
                "matcher: %s now has tick %s and lot %s (%d open orders canceled)",
                book.symbol,
                plain(rules.get("tick_size")),
                plain(rules.get("lot_size")),
                len(snapshot["resting"]) + len(snapshot["stops"]),
            )
        book.rules_set(rules)

    def _priority(self, book: Book, order: Order) -> None:
        book.state.book_seq += 1
        order.book_seq = book.state.book_seq
        book.dirty = True

    def _touch(self, order: Order, result: BatchResult) -> None:
        order.updated_at = result.now
        result.changed[order.pk] = order
        result.account_orders[order.account_id][order.pk] = order

    def _need(self, book: Book, order: Order, open_quantity: Decimal, price: Decimal) -> Decimal:
        if order.side == Order.Side.SELL:
            return open_quantity
        return buy_hold(
            quantity=open_quantity,
            price=price,
            fee_rate=max(order.maker_fee_rate, order.taker_fee_rate),  # its own (decision 0010)
            precision=book.quote_precision,
        )

    def _hold_asset(self, book: Book, order: Order):  # noqa: ANN202
        return hold_asset(book.instrument, order.side)

    def _release(self, book: Book, order: Order, amount: Decimal, result: BatchResult) -> None:
        if amount <= 0:
            return
        account = self.account(order.account_id)
        asset = self._hold_asset(book, order)
        order.held -= amount
        result.entries.append(
            EntrySpec(
                kind=EntryKind.RELEASE,
                reference=f"order {order.pk}",
                legs=(
                    Leg(account, asset, Bucket.HELD, -amount),
                    Leg(account, asset, Bucket.AVAILABLE, amount),
                ),
            )
        )

    def _release_surplus(self, book: Book, order: Order, result: BatchResult) -> None:
        open_quantity = order.quantity - order.filled_quantity
        price = order.price if order.price is not None else order.protection_price
        need = self._need(book, order, open_quantity, price)
        self._release(book, order, order.held - need, result)

    def _close(
        self, book: Book, order: Order, status: str, reason: str, result: BatchResult
    ) -> None:
        order.status = status
        order.reason = reason
        order.closed_at = result.now
        self._release(book, order, order.held, result)
        self._touch(order, result)
        book.orders.pop(order.pk, None)

    def _trade(self, book: Book, event: Trade, result: BatchResult) -> None:
        maker = book.orders[event.maker_order_id]
        taker = book.orders[event.taker_order_id]
        price = event.price * book.tick
        quantity = event.qty * book.lot
        notional = _WIDE.multiply(price, quantity)
        # Each order pays the rates it was placed under (decision 0010).
        if maker.side == Order.Side.BUY:
            buyer, seller = maker, taker
            buyer_rate, seller_rate = maker.maker_fee_rate, taker.taker_fee_rate
        else:
            buyer, seller = taker, maker
            buyer_rate, seller_rate = taker.taker_fee_rate, maker.maker_fee_rate
        precision = book.quote_precision
        amount = fill_amount(
            notional_before=buyer.filled_notional,
            notional_after=buyer.filled_notional + notional,
            precision=precision,
        )
        buyer_fee = fee(amount=amount, rate=buyer_rate, precision=precision)
        seller_fee = fee(amount=amount, rate=seller_rate, precision=precision)
        now = result.now
        for order, remaining_lots, charged, order_fee in (
            (maker, event.maker_remaining, amount, buyer_fee if maker is buyer else seller_fee),
            (taker, event.taker_remaining, amount, buyer_fee if taker is buyer else seller_fee),
        ):
            order.filled_quantity += quantity
            order.filled_notional += notional
            order.filled_quote += charged
            order.fees += order_fee
            order.average_price = (order.filled_notional / order.filled_quantity).quantize(_AVG)
            order.last_fill_at = now
            order.held -= amount + buyer_fee if order is buyer else quantity
            if remaining_lots == 0:
                order.status = Order.Status.FILLED
                order.reason = ""
                order.closed_at = now
                self._release(book, order, order.held, result)
                book.orders.pop(order.pk, None)
            else:
                order.status = Order.Status.PARTIALLY_FILLED
            self._touch(order, result)

        instrument = book.instrument
        buyer_account = self.account(buyer.account_id)
        seller_account = self.account(seller.account_id)
        legs = [
            Leg(seller_account, instrument.base, Bucket.HELD, -quantity),
            Leg(buyer_account, instrument.base, Bucket.PENDING, quantity),
        ]
        if amount + buyer_fee:
            legs.append(Leg(buyer_account, instrument.quote, Bucket.HELD, -(amount + buyer_fee)))
        if amount - seller_fee:
            legs.append(Leg(seller_account, instrument.quote, Bucket.PENDING, amount - seller_fee))
        if buyer_fee + seller_fee:
            legs.append(
                Leg(self._fees(), instrument.quote, Bucket.AVAILABLE, buyer_fee + seller_fee)
            )
        result.entries.append(
            EntrySpec(
                kind=EntryKind.TRADE, reference=f"{book.symbol} trade {event.seq}", legs=tuple(legs)
            )
        )
        aggressor = Order.Side.BUY if event.aggressor_side == EngineSide.BUY else Order.Side.SELL
        result.trades.append(
            TradeFill(
                instrument_id=instrument.pk,
                seq=event.seq,
                maker_order_id=maker.pk,
                taker_order_id=taker.pk,
                buyer_id=buyer.account_id,
                seller_id=seller.account_id,
                price=price,
                quantity=quantity,
                quote_amount=amount,
                aggressor_side=aggressor,
                buyer_fee=buyer_fee,
                seller_fee=seller_fee,
                executed_at=now,
            )
        )
        book.state.trade_seq = event.seq
        book.state.last_price = price
        book.dirty = True
        self._position(instrument, buyer.account_id, quantity, price, result)
        self._position(instrument, seller.account_id, -quantity, price, result)
        message = {
            "symbol": book.symbol,
            "seq": event.seq,
            "price": plain(price),
            "quantity": plain(quantity),
            "aggressor": aggressor,
            "maker_order_id": maker.pk,
            "taker_order_id": taker.pk,
            "ts": event.ts,
        }
        result.trade_messages.append(
            EventRow(
                topic=kafka.TRADES,
                key=book.symbol,
                type="trade",
                seq=event.seq,
                ts=event.ts or kafka.now_ms(),
                data=message,
            )
        )
        for account_id, side, own_fee in (
            (buyer.account_id, "buy", buyer_fee),
            (seller.account_id, "sell", seller_fee),
        ):
            result.account_trades[account_id].append(
                message | {"side": side, "fee": plain(own_fee)}
            )

    def _position(
        self,
        instrument: Instrument,
        account_id: int,
        change: Decimal,
        price: Decimal,
        result: BatchResult,
    ) -> None:
        key = (account_id, instrument.pk)
        position = result.positions.get(key) or self.positions.get(key)
        if position is None:
            position = Position.objects.filter(
                account_id=account_id, instrument=instrument
            ).first() or Position(account_id=account_id, instrument=instrument)
            self.positions[key] = position
        held = position.quantity
        if held == 0 or (held > 0) == (change > 0):
            total = held + change
            position.average_cost = (
                (abs(held) * position.average_cost + abs(change) * price) / abs(total)
            ).quantize(_COST, context=_WIDE)
            position.quantity = total
        else:
            closing = min(abs(change), abs(held))
            direction = 1 if held > 0 else -1
            position.realized_pnl += closing * (price - position.average_cost) * direction
            position.quantity = held + change
            if position.quantity == 0:
                position.average_cost = ZERO
            elif (position.quantity > 0) != (held > 0):
                position.average_cost = price
        position.updated_at = result.now
        result.positions[key] = position

    # -- commit ---------------------------------------------------------------------------
    def _next_seq(self, topic: str, key: str) -> int:
        seq = self.stream_seq.get((topic, key))
        if seq is None:
            row = StreamSequence.objects.filter(topic=topic, key=key).first()
            seq = row.seq if row else 0
        seq += 1
        self.stream_seq[(topic, key)] = seq
        return seq

    def _event_rows(self, result: BatchResult) -> list[EventRow]:
        rows = list(result.trade_messages)
        ts = kafka.now_ms()
        for book in self.books.values():
            if not book.deltas and not book.level_deltas:
                continue
            levels = book.level_deltas
            for (side, price), qty in book.deltas.items():
                levels[(side, price * book.tick)] = qty * book.lot
            bids = sorted(
                ([plain(p), plain(q)] for (s, p), q in levels.items() if s == 1),
                key=lambda level: -Decimal(level[0]),
            )
            asks = sorted(
                ([plain(p), plain(q)] for (s, p), q in levels.items() if s == -1),
                key=lambda level: Decimal(level[0]),
            )
            book.deltas = {}
            book.level_deltas = {}
            rows.append(
                EventRow(
                    topic=kafka.BOOK,
                    key=book.symbol,
                    type="book.delta",
                    seq=self._next_seq(kafka.BOOK, book.symbol),
                    ts=ts,
                    data={"symbol": book.symbol, "bids": bids, "asks": asks},
                )
            )
        for account_id, orders in result.account_orders.items():
            key = str(account_id)
            rows.append(
                EventRow(
                    topic=kafka.ACCOUNT_EVENTS,
                    key=key,
                    type="account.orders",
                    seq=self._next_seq(kafka.ACCOUNT_EVENTS, key),
                    ts=ts,
                    data={
                        "account_id": account_id,
                        "orders": [order_message(order) for order in orders.values()],
                        "trades": result.account_trades.get(account_id, []),
                    },
                )
            )
        return rows

    def _commit(self, result: BatchResult) -> None:
        rows = self._event_rows(result)
        states = [book.state for book in self.books.values() if book.dirty]
        for state in states:
            state.updated_at = result.now
        with transaction.atomic(durable=True):
            batch_write(
                topic=self.topic,
                now=result.now,
                orders=list(result.changed.values()),
                replace_holds=result.replace_holds,
                trades=result.trades,
                positions=list(result.positions.values()),
                states=states,
                events=rows,
                checkpoints=result.checkpoints,
                topic_id=self.topic_id,
                applied=result.applied,
            )
            # Last: the balance rows are the last locks of the global order (after orders and
            # positions), and the traders' holds wait on them, so they are held only from here
            # to the commit.
            if result.entries:
                ledger_post(entries=result.entries)
        for book in self.books.values():
            book.dirty = False


_UPDATE_COLUMNS = (
    ("status", "text"),
    ("reason", "text"),
    ("quantity", "numeric"),
    ("price", "numeric"),
    ("filled_quantity", "numeric"),
    ("filled_notional", "numeric"),
    ("filled_quote", "numeric"),
    ("average_price", "numeric"),
    ("fees", "numeric"),
    ("held", "numeric"),
    ("book_seq", "bigint"),
    ("applied_seq", "integer"),
    ("accepted_at", "timestamptz"),
    ("triggered_at", "timestamptz"),
    ("last_fill_at", "timestamptz"),
    ("closed_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_TRADE_COLUMNS = (
    ("instrument_id", "bigint"),
    ("seq", "bigint"),
    ("maker_order_id", "bigint"),
    ("taker_order_id", "bigint"),
    ("buyer_id", "bigint"),
    ("seller_id", "bigint"),
    ("price", "numeric"),
    ("quantity", "numeric"),
    ("quote_amount", "numeric"),
    ("aggressor_side", "text"),
    ("buyer_fee", "numeric"),
    ("seller_fee", "numeric"),
    ("executed_at", "timestamptz"),
)
_POSITION_COLUMNS = (
    ("account_id", "bigint"),
    ("instrument_id", "bigint"),
    ("quantity", "numeric"),
    ("average_cost", "numeric"),
    ("realized_pnl", "numeric"),
    ("updated_at", "timestamptz"),
)
_STATE_COLUMNS = (
    ("instrument_id", "bigint"),
    ("trade_seq", "bigint"),
    ("last_price", "numeric"),
    ("book_seq", "bigint"),
    ("updated_at", "timestamptz"),
)


_ORDERS_BY_ID = (
    f"SELECT {select_columns(Order)} FROM {Order._meta.db_table} "  # noqa: S608 - constants
    "WHERE id = ANY(%(ids)b::bigint[])"
)


def _unnest(prefix: str, columns: tuple[tuple[str, str], ...]) -> str:
    arrays = ", ".join(f"%({prefix}_{name})b::{kind}[]" for name, kind in columns)
    aliases = ", ".join(f'"{name}"' for name, _ in columns)
    return f"unnest({arrays}) AS v({aliases})"


def _names(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(name for name, _ in columns)


def _table(model: type) -> str:
    return model._meta.db_table


_SEQUENCE_COLUMNS = (("topic", "text"), ("key", "text"), ("seq", "bigint"))
_CHECKPOINT_COLUMNS = (("partition", "integer"), ("offset", "bigint"))
_OUTBOX_TABLE = Outbox._meta.db_table
_APPLIED = (
    f"SELECT id FROM {_OUTBOX_TABLE} "  # noqa: S608 - constant
    "WHERE id = ANY(%(ids)b::bigint[]) AND applied_at IS NOT NULL"
)
# One home for the checkpoint's upsert (the batch's statement and a dead-letter's own).
# The offset is set, not raised: on a topic that came back empty offsets start again.
_CHECKPOINT_UPSERT = f"""
INSERT INTO {_table(MatcherCheckpoint)} (topic, partition, "offset", topic_id, updated_at)
SELECT %(topic)s::text, partition, "offset", %(topic_id)s::text, %(now)s::timestamptz
  FROM {_unnest("c", _CHECKPOINT_COLUMNS)}
    ON CONFLICT (topic, partition) DO UPDATE
       SET "offset" = EXCLUDED."offset", topic_id = EXCLUDED.topic_id,
           updated_at = EXCLUDED.updated_at
"""  # noqa: S608 - table and column names are constants; values are bound
_MARK_APPLIED = (
    f"UPDATE {_OUTBOX_TABLE} SET applied_at = %(now)s::timestamptz "  # noqa: S608 - constant
    "WHERE id = ANY(%(applied)b::bigint[]) AND applied_at IS NULL"
)
_EVENT_COLUMNS = (
    ("topic", "text"),
    ("key", "text"),
    ("type", "text"),
    ("seq", "bigint"),
    ("ts", "bigint"),
    ("data", "text"),
)
# In the events' order, so their ids (the relay's sending order) follow it.
_EVENTS_UNNEST = (
    "unnest("
    + ", ".join(f"%(e_{name})b::{kind}[]" for name, kind in _EVENT_COLUMNS)
    + f") WITH ORDINALITY AS v({_names(_EVENT_COLUMNS)}, n)"
)

# Everything a batch writes but the ledger, in ONE statement of constant text (prepared once per
# connection): each table's rows travel as arrays, one per column, and an empty batch of a table
# writes nothing. `held_for_replace` belongs to order_replace too, so it only moves by a
# difference.
_BATCH_WRITE = compact(
    f"""
WITH orders AS (
    UPDATE {_table(Order)} AS o
       SET {", ".join(f"{name} = v.{name}" for name, _ in _UPDATE_COLUMNS)},
           held_for_replace = o.held_for_replace - v.moved
      FROM {_unnest("o", (("id", "bigint"), *_UPDATE_COLUMNS, ("moved", "numeric")))}
     WHERE o.id = v.id
), trades AS (
    INSERT INTO {_table(TradeRow)} ({_names(_TRADE_COLUMNS)})
    SELECT * FROM {_unnest("t", _TRADE_COLUMNS)}
), positions AS (
    INSERT INTO {_table(Position)} ({_names(_POSITION_COLUMNS)})
    SELECT * FROM {_unnest("p", _POSITION_COLUMNS)}
    ON CONFLICT (account_id, instrument_id) DO UPDATE
       SET quantity = EXCLUDED.quantity, average_cost = EXCLUDED.average_cost,
           realized_pnl = EXCLUDED.realized_pnl, updated_at = EXCLUDED.updated_at
), states AS (
    UPDATE {_table(BookState)} AS s
       SET trade_seq = v.trade_seq, last_price = v.last_price, book_seq = v.book_seq,
           updated_at = v.updated_at
      FROM {_unnest("s", _STATE_COLUMNS)}
     WHERE s.instrument_id = v.instrument_id
), events AS (
    INSERT INTO {_table(Outbox)} (topic, key, type, seq, ts, data, created_at)
    SELECT topic, key, type, seq, ts, data::jsonb, %(now)s::timestamptz
      FROM {_EVENTS_UNNEST}
     ORDER BY v.n
), sequences AS (
    INSERT INTO {_table(StreamSequence)} (topic, key, seq)
    SELECT * FROM {_unnest("q", _SEQUENCE_COLUMNS)}
    ON CONFLICT (topic, key) DO UPDATE SET seq = EXCLUDED.seq
), applied AS (
    {_MARK_APPLIED}
)
{_CHECKPOINT_UPSERT}
"""  # noqa: S608 - table and column names are constants; values are bound
)


def _columns(
    prefix: str, columns: tuple[tuple[str, str], ...], rows: list[tuple]
) -> dict[str, list]:
    """One list per column, e.g. {"t_price": [...]}; a numeric column's ints become Decimals
    (psycopg dumps a list of one type only)."""
    arrays: dict[str, list] = {}
    for index, (name, kind) in enumerate(columns):
        values = [row[index] for row in rows]
        if kind == "numeric":
            values = [Decimal(v) if type(v) is int else v for v in values]
        arrays[f"{prefix}_{name}"] = values
    return arrays


def batch_write(
    *,
    topic: str,
    now: Any,
    orders: list[Order],
    replace_holds: dict[int, Decimal],
    trades: list[TradeFill],
    positions: list[Position],
    states: list[BookState],
    events: list[EventRow],
    checkpoints: dict[int, int],
    topic_id: str = "",
    applied: list[int] | None = None,
) -> None:
    """Write a batch's orders, trades, positions, book states, outbox rows, stream sequences,
    applied commands and checkpoint in one prepared statement (in the caller's transaction)."""
    names = [name for name, _ in _UPDATE_COLUMNS]
    params: dict[str, Any] = {
        "topic": topic,
        "now": now,
        "topic_id": topic_id,
        "applied": applied or [],
    }
    params |= _columns(
        "o",
        (("id", "bigint"), *_UPDATE_COLUMNS, ("moved", "numeric")),
        [
            (order.pk, *(getattr(order, name) for name in names), replace_holds.get(order.pk, ZERO))
            for order in orders
        ],
    )
    for prefix, columns, objects in (
        ("t", _TRADE_COLUMNS, trades),
        ("p", _POSITION_COLUMNS, positions),
        ("s", _STATE_COLUMNS, states),
    ):
        params |= _columns(
            prefix,
            columns,
            [tuple(getattr(row, name) for name, _ in columns) for row in objects],
        )
    params |= _columns(
        "e",
        _EVENT_COLUMNS,
        [(row.topic, row.key, row.type, row.seq, row.ts, json.dumps(row.data)) for row in events],
    )
    sequences = {(row.topic, row.key): row.seq for row in events if row.topic != kafka.TRADES}
    params |= _columns("q", _SEQUENCE_COLUMNS, [(t, k, seq) for (t, k), seq in sequences.items()])
    params |= _columns("c", _CHECKPOINT_COLUMNS, sorted(checkpoints.items()))
    prepared_cursor().execute(_BATCH_WRITE, params, prepare=True)


# ---------------------------------------------------------------------------------------------
# The Kafka loop
# ---------------------------------------------------------------------------------------------


class MatcherWorker(KafkaWorker):
    """Consume `orders` from checkpoint + 1, run batches, relay their events after commit."""

    name = "matcher"
    topics = (kafka.ORDERS,)
    start_at = "earliest"

    def __init__(self, *, partitions: list[int] | None = None, batch_size: int | None = None):
        super().__init__()
        self.only_partitions = partitions
        self.batch_size = batch_size or settings.MATCHER_BATCH_SIZE
        self.poll_timeout_ms = settings.MATCHER_POLL_TIMEOUT_MS
        # Plans by key only, whatever the tables' size when first planned (see tredye.db).
        db.SESSION_PLANNER_SETTINGS = (
            "enable_seqscan = off",
            "enable_hashjoin = off",
            "enable_mergejoin = off",
        )
        self.matcher = Matcher()
        self.relay = Relay(topics=EVENT_TOPICS)
        self.lanes: Lanes | None = None
        self.batches = 0
        self.commands = 0
        self.last_relay_drain = 0.0

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    self._start()
                    super().run()
                    return
                except DatabaseError as error:
                    delay = self.backoff.next_delay()
                    logger.warning("matcher: database error (%s); retrying in %.1fs", error, delay)
                    self._stop_lanes()
                    self.stop_event.wait(delay)
        finally:
            self._stop_lanes()
            self.relay.close()
            logger.info("matcher: %d batches, %d commands", self.batches, self.commands)

    def _start(self) -> None:
        close_old_connections()
        if self.lanes is None:
            self.lanes = Lanes()
            for topic in EVENT_TOPICS:
                self.lanes.acquire(topic, wait=True)
        kafka.ensure_topics(EVENT_TOPICS + (kafka.DEAD_LETTER,))
        self.relay.recovered.clear()
        self.relay.drain()
        self.matcher.reset()

    def _stop_lanes(self) -> None:
        if self.lanes is not None:
            try:
                self.lanes.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("matcher: lane connection already gone")
            self.lanes = None

    def _consume(self) -> None:
        # Rebuilding the consumer re-reads from the checkpoint, so drop in-memory state too.
        self.matcher.reset()
        super()._consume()

    def _assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        """Read each partition from its checkpoint + 1 if the checkpoint belongs to this very
        topic; otherwise (a broker that came back empty, a topic created again, a checkpoint
        kept before topic ids were) from the beginning: commands applied before are skipped by
        their outbox id, so nothing is applied twice and nothing is skipped."""
        physical = kafka.topic(kafka.ORDERS)
        ids = consumer.partitions_for_topic(physical)
        if not ids:
            raise KafkaError(f"no partitions for {physical}")
        wanted = sorted(ids) if self.only_partitions is None else self.only_partitions
        partitions = [TopicPartition(physical, p) for p in wanted if p in ids]
        consumer.assign(partitions)
        current = kafka.topic_id(consumer, physical)
        self.matcher.topic_id = current
        self.assigned_topic_ids = {physical: current}
        stored = self.matcher.checkpoints_with_ids()
        starts = {}
        for tp in partitions:
            offset, topic_id = stored.get(tp.partition, (None, ""))
            # No id from the broker (before Kafka 2.8): the checkpoint is trusted.
            if offset is not None and (not current or topic_id == current):
                consumer.seek(tp, offset + 1)
                starts[tp.partition] = offset + 1
            else:
                if offset is not None:
                    logger.warning(
                        "matcher: %s[%d] is not the topic of checkpoint %d (topic id %r, "
                        "now %r): reading it from the start; applied commands are skipped",
                        physical,
                        tp.partition,
                        offset,
                        topic_id,
                        current,
                    )
                consumer.seek_to_beginning(tp)
                starts[tp.partition] = 0
        logger.info("matcher: partitions %s from offsets %s", wanted, starts)
        return partitions

    def _process(self, batch: dict) -> None:
        commands: list[Command] = []
        for tp, records in batch.items():
            for record in records:
                self.consumed += 1
                try:
                    command = command_decode(record.value)
                except EnvelopeError as error:
                    self.dead_letter(record, str(error))
                    command = Command("skip", "", 0)
                command.partition = tp.partition
                command.offset = record.offset
                command.record = record
                command.outbox_id = outbox_id(record)
                commands.append(command)
        for start in range(0, len(commands), self.batch_size):
            self._run(commands[start : start + self.batch_size])

    def _run(self, commands: list[Command]) -> None:
        try:
            result = self.matcher.run_batch(commands)
        except DatabaseError:
            raise
        except Exception:
            # The books may be ahead of PostgreSQL now: rebuild, and find the poison command.
            logger.exception("matcher: batch of %d failed; retrying one by one", len(commands))
            close_old_connections()
            self.matcher.reset()
            for command in commands:
                try:
                    self._dead_letters(self.matcher.run_batch([command]))
                except DatabaseError:
                    raise
                except Exception as error:  # noqa: BLE001 - dead-letter whatever fails alone
                    logger.exception("matcher: command at offset %s failed", command.offset)
                    self.matcher.reset()
                    self.dead_letter(command.record, f"matcher error: {error}")
                    self._checkpoint_only([command])
        else:
            self._dead_letters(result)
        self.batches += 1
        self.commands += len(commands)
        # One send of at most 5,000 rows: a backlog (a topic that lost its history gets every
        # trade again) goes out between batches instead of holding the commands up.
        self.relay.drain(rounds=1)

    def _dead_letters(self, result: BatchResult) -> None:
        for record, reason in result.dead:
            self.dead_letter(record, reason)

    def _checkpoint_only(self, commands: list[Command]) -> None:
        """Record dead-lettered commands as done: checkpoint and outbox ids, nothing else."""
        last: dict[int, int] = {}
        for command in commands:
            last[command.partition] = max(last.get(command.partition, -1), command.offset)
        params = {
            "topic": self.matcher.topic,
            "topic_id": self.matcher.topic_id,
            "now": timezone.now(),
            "applied": [c.outbox_id for c in commands if c.outbox_id is not None],
        }
        params |= _columns("c", _CHECKPOINT_COLUMNS, sorted(last.items()))
        with transaction.atomic():
            cursor = prepared_cursor()
            cursor.execute(compact(_CHECKPOINT_UPSERT), params)
            cursor.execute(_MARK_APPLIED, params)

    def tick(self, now: float) -> None:
        # While idle too: relays events a failed produce left behind, and sees a topic that
        # came back empty (which then gets its history again).
        if now - self.last_relay_drain >= 1.0:
            self.last_relay_drain = now
            self.relay.drain(rounds=1)
