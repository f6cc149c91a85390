"""Replay: every book, order, trade, position and balance rebuilt from the recorded commands
through the matcher's own engine code, then compared with PostgreSQL (`manage.py replay`).

The order services and the matcher keep a record of every command: an outbox row on the
`orders` topic is never deleted, and the matcher marks each one applied in the transaction
that wrote its effects, with its place in that batch (`Outbox.applied_at`, `applied_rank`).
A place command carries the order's terms and its hold (`sql.PLACE_TERMS`), a rules change
the rules before it. So the state of the venue is a function of the commands, and this module
computes that function again, apart from the matcher and without writing anything:

- Each book starts empty (a `Book` with a fresh `BookState`), under the rules in force before
  its first rules change; orders are unsaved `Order`s built from their place commands;
  positions start flat (none is read from PostgreSQL); the commands the matcher applied go
  through `OrderLifecycle.apply` in the order it applied them, batch by batch as it committed
  them (the time of each batch is its `applied_at`).
- The commands come from the `orders` topic when it still holds every applied command
  (partition by partition in offset order, a command seen again skipped by its outbox id, as
  the matcher does), else from PostgreSQL's record in (applied_at, applied_rank, id) order.
  Each book's commands are in one partition, so both orders give each book the same sequence.
- Balances: what the commands imply plus what came from outside the order path.
  *Derived* (recomputed here, so left out of the journal's sums): the matcher's entries (every
  `trade` entry, and `release` entries of an order, "order N"), and the services' holds of an
  order (`hold` entries "order N": a placement's hold, taken from its place command, and a
  replace's extra hold, from its replace command, whether the matcher applied them or not).
  *Inputs* (summed from the journal as they are): everything else: deposits, withdrawals,
  settlements, fees and adjustments, holds and releases that name no order.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so a matcher running
meanwhile does not make a difference appear: the applied commands and their effects are
committed together. An order whose place command was written before place commands carried
their terms cannot be rebuilt: its book, and the balances its trades could have moved, are
left out of the comparison and reported as not replayable.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import DecimalField, Model, Q, Sum, TextField
from django.db.models.functions import Cast
from kafka import TopicPartition
from kafka.errors import KafkaError

from accounts.models import Account, Asset, Balance, Bucket, EntryKind, Posting
from trading import sql
from trading.business_days import Calendar
from trading.matching.books import Book
from trading.matching.commands import (
    CANCEL,
    EXPIRE_DAY,
    PLACE,
    REPLACE,
    RULES_CHANGE,
    Command,
    command_decode,
    rules_decode,
)
from trading.matching.lifecycle import OrderLifecycle
from trading.matching.store import BatchResult, TradeFill
from trading.models import BookState, Instrument, Order, Outbox, Position, Trade
from trading.outbox import outbox_id as record_outbox_id
from trading.placement import new_order
from trading.rules import hold_asset
from trading.units import ZERO, plain
from tredye import kafka
from tredye.kafka import EnvelopeError

TOPIC = "topic"
DATABASE = "database"
AUTO = "auto"
SOURCES = (TOPIC, DATABASE, AUTO)

# The commands the lifecycle applies; any other command (a book digest asked for by
# reconciliation) changes no state.
_STATEFUL = (PLACE, CANCEL, REPLACE, EXPIRE_DAY, RULES_CHANGE)
_BUCKETS = tuple(Bucket.values)
# How long the topic may stay quiet before it is taken as read to its end.
TOPIC_IDLE_S = 1.0


class ReplayError(Exception):
    """Replay cannot run as asked (a bad source, a topic that lacks commands)."""


# --- the record -------------------------------------------------------------------------------


@dataclass(slots=True)
class Recorded:
    """One recorded command: its outbox id and its record as the matcher reads it."""

    outbox_id: int
    raw: bytes


def _record_rows(queryset: Any) -> Iterator[tuple[int, str, str, bytes, datetime.datetime | None]]:
    """(id, type, key, the record's bytes, applied_at) of outbox rows, each encoded as the relay
    sends it (`kafka.encode_json` of the row's JSON text), so both sources decode alike."""
    rows = queryset.annotate(text=Cast("data", TextField())).values_list(
        "id", "type", "key", "seq", "ts", "text", "applied_at"
    )
    for outbox_id, kind, key, seq, ts, text, applied_at in rows.iterator(chunk_size=5000):
        raw = kafka.encode_json(type=kind, key=key, seq=seq, ts=ts, data_json=text)
        yield outbox_id, kind, key, raw, applied_at


def _commands() -> Any:
    return Outbox.objects.filter(topic=kafka.ORDERS)


_DECIMAL_TERMS = frozenset(
    name for name in sql.PLACE_TERMS if isinstance(Order._meta.get_field(name), DecimalField)
)


_ORDER_DECIMALS = tuple(
    f.attname for f in Order._meta.concrete_fields if isinstance(f, DecimalField)
)


def place_terms(data: dict[str, Any]) -> tuple[dict[str, Any], Decimal, int] | None:
    """The terms a place command records (`sql.PLACE_TERMS`) as Order field values, its hold
    and the hold's asset id; None for a command written before place commands carried them.
    Raises EnvelopeError on terms that are there but malformed."""
    if "account_id" not in data:
        return None
    values: dict[str, Any] = {}
    try:
        for name in sql.PLACE_TERMS:
            value = data[name]
            values[name] = Decimal(value) if name in _DECIMAL_TERMS and value is not None else value
        return values, Decimal(data["hold"]), int(data["hold_asset_id"])
    except (KeyError, TypeError, ArithmeticError) as error:
        raise EnvelopeError(f"place terms malformed: {error!r}") from None


# --- the replay ---------------------------------------------------------------------------------


class _FlatPositions(dict[tuple[int, int], Position]):
    """The lifecycle's cache of positions, complete from the start: a position it lacks is
    flat, so the lifecycle never reads one from PostgreSQL (the matcher's cache reads it)."""

    def __init__(self, instruments: dict[int, Instrument]) -> None:
        super().__init__()
        self.instruments = instruments

    def get(self, key: tuple[int, int], default: Any = None) -> Position:
        position = super().get(key)
        if position is None:
            account_id, instrument_id = key
            position = Position(account_id=account_id, instrument=self.instruments[instrument_id])
            self[key] = position
        return position


class Replayer:
    """Books, orders, trades, positions and balances built from commands by the matcher's
    `Book` and `OrderLifecycle`, in memory only."""

    def __init__(
        self, *, instruments: Iterable[Instrument], fees_account: Account, calendar: Calendar
    ) -> None:
        self.books: dict[str, Book] = {}
        by_id: dict[int, Instrument] = {}
        for instrument in instruments:
            own = copy.copy(instrument)  # rules change on the replay's copy only
            self.books[own.symbol] = Book(own, BookState(instrument=own))
            by_id[own.pk] = own
        self.positions = _FlatPositions(by_id)
        self.accounts: dict[int, Account] = {}
        self.lifecycle = OrderLifecycle(
            account=self._account, fees_account=lambda: fees_account, positions=self.positions
        )
        self.lifecycle.calendar = calendar
        self.fees_account = fees_account
        self.orders: dict[int, Order] = {}
        self.trades: list[TradeFill] = []
        self.balances: dict[tuple[int, int], dict[str, Decimal]] = defaultdict(
            lambda: dict.fromkeys(_BUCKETS, ZERO)
        )
        # Orders whose place command carries no terms (order id -> symbol), and their books.
        self.not_replayable: dict[int, str] = {}
        self.left_out: set[str] = set()
        self.applied = 0
        self.skipped: Counter[str] = Counter()

    def _account(self, account_id: int) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            account = self.accounts[account_id] = Account(pk=account_id, kind=Account.Kind.CUSTOMER)
        return account

    def _move(self, account_id: int, asset_id: int, bucket: str, amount: Decimal) -> None:
        self.balances[(account_id, asset_id)][bucket] += amount

    def _hold(self, account_id: int, asset_id: int, amount: Decimal) -> None:
        self._move(account_id, asset_id, Bucket.AVAILABLE, -amount)
        self._move(account_id, asset_id, Bucket.HELD, amount)

    # -- what the services wrote with each command ---------------------------------------------
    def rules_before(self, symbol: str, data: dict[str, Any]) -> bool:
        """Start a book under the rules before its first change; False if the command does
        not say them (written before rules changes carried them)."""
        book = self.books.get(symbol)
        previous = data.get("previous")
        if book is None or not isinstance(previous, dict):
            return False
        book.rules_set(rules_decode({"rules": previous}))
        return True

    def placed(self, *, symbol: str, data: dict[str, Any], at: datetime.datetime) -> None:
        """The order a place command created (PENDING_NEW) and the hold written with it."""
        book = self.books.get(symbol)
        order_id = data.get("order_id")
        if book is None or not isinstance(order_id, int):
            return  # no order was written (the matcher dead-letters such a command)
        terms = place_terms(data)
        if terms is None:
            self.not_replayable[order_id] = symbol
            self.left_out.add(symbol)
            return
        values, hold, asset_id = terms
        account_id = values.pop("account_id")
        order = new_order(
            account=self._account(account_id),
            instrument=book.instrument,
            held=hold,
            created_at=at,
            updated_at=at,
            **values,
        )
        order.pk = order_id
        for name in _ORDER_DECIMALS:  # the defaults are ints; a row read back has Decimals
            if type(getattr(order, name)) is int:
                setattr(order, name, Decimal(getattr(order, name)))
        self.orders[order_id] = order
        self._hold(account_id, asset_id, hold)

    def replace_held(self, command: Command) -> None:
        """The extra hold a replace took when it was written (applied or not)."""
        order = self.orders.get(command.order_id)
        book = self.books.get(command.symbol)
        if order is None or book is None or not command.extra_hold:
            return
        asset = hold_asset(book.instrument, order.side)
        self._hold(order.account_id, asset.pk, command.extra_hold)
        order.held_for_replace += command.extra_hold  # the matcher moves it (`replace_holds`)

    # -- what the matcher did with them ---------------------------------------------------------
    def apply(self, batch: list[Recorded], now: datetime.datetime) -> None:
        """Apply one batch of commands as the matcher did (`Matcher.run_batch`)."""
        result = BatchResult(now=now)
        ts = int(now.timestamp() * 1000)
        for recorded in batch:
            try:
                command = command_decode(recorded.raw)
            except EnvelopeError:
                self.skipped["not a command (dead-lettered)"] += 1
                continue
            command.outbox_id = recorded.outbox_id
            book = self.books.get(command.symbol)
            if book is None:
                self.skipped["unknown instrument (dead-lettered)"] += 1
                continue
            if command.symbol in self.left_out:
                self.skipped["on a book that is not replayable"] += 1
                continue
            if command.kind not in _STATEFUL:
                self.skipped[f"{command.kind} (changes nothing)"] += 1
                continue
            if command.kind in (PLACE, CANCEL, REPLACE):
                order = self.orders.get(command.order_id)
                if order is None or order.instrument_id != book.instrument.pk:
                    self.skipped["unknown order (dead-lettered)"] += 1
                    continue
                result.orders[order.pk] = order
                if order.status in Order.OPEN_STATUSES:
                    book.orders.setdefault(order.pk, order)
            self.lifecycle.apply(book, command, result, ts)
            self.applied += 1
        for entry in result.entries:
            for leg in entry.legs:
                self._move(leg.account.pk, leg.asset.pk, leg.bucket, leg.amount)
        self.trades.extend(result.trades)
        for order_id, moved in result.replace_holds.items():
            self.orders[order_id].held_for_replace -= moved
        for book in self.books.values():
            # The matcher turns these into book events; nothing here reads them.
            book.deltas = {}
            book.level_deltas = {}
            book.dirty = False


# --- the source of the commands ----------------------------------------------------------------


def _topic_read(
    applied: dict[int, datetime.datetime], progress: Callable[[str], None]
) -> tuple[list[Recorded] | None, str]:
    """The applied commands as the `orders` topic holds them (partition by partition, each
    command's first record), or None and why the topic cannot be used."""
    if not kafka.reachable():
        return None, "the broker is unreachable"
    try:
        consumer = kafka.consumer(auto_offset_reset="earliest", max_poll_records=5000)
    except KafkaError as error:
        return None, f"the broker is unreachable ({error})"
    try:
        physical = kafka.topic(kafka.ORDERS)
        ids = consumer.partitions_for_topic(physical)
        if not ids:
            return None, f"the topic {physical} does not exist"
        partitions = [TopicPartition(physical, p) for p in sorted(ids)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: dict[int, list[Recorded]] = defaultdict(list)
        seen: set[int] = set()
        records = 0
        quiet = shown = time.monotonic()
        while len(seen) < len(applied) and time.monotonic() - quiet < TOPIC_IDLE_S:
            for tp, items in consumer.poll(timeout_ms=100).items():
                quiet = time.monotonic()
                records += len(items)
                for record in items:
                    outbox_id = record_outbox_id(record)
                    if outbox_id in applied and outbox_id not in seen:
                        seen.add(outbox_id)
                        found[tp.partition].append(Recorded(outbox_id, record.value))
            if time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                progress(f"read {records:,} records of {physical}")
    except KafkaError as error:
        return None, f"the topic could not be read ({error})"
    finally:
        consumer.close()
    if len(seen) < len(applied):
        missing = sorted(set(applied) - seen)
        return None, (
            f"the orders topic holds {len(seen):,} of the {len(applied):,} applied commands "
            f"(the first missing: outbox {', '.join(map(str, missing[:5]))})"
        )
    return [r for p in sorted(found) for r in found[p]], (
        f"the orders topic holds every one of the {len(applied):,} applied commands"
    )


def _batches(
    commands: Iterable[Recorded], applied: dict[int, datetime.datetime]
) -> Iterator[tuple[list[Recorded], datetime.datetime]]:
    """Consecutive commands applied by the same batch (the same `applied_at`), with its time."""
    batch: list[Recorded] = []
    at: datetime.datetime | None = None
    for recorded in commands:
        when = applied[recorded.outbox_id]
        if batch and when != at:
            yield batch, at  # type: ignore[misc]
            batch = []
        batch.append(recorded)
        at = when
    if batch and at is not None:
        yield batch, at


# --- the comparison ---------------------------------------------------------------------------


@dataclass(slots=True)
class RowDifference:
    """One row that differs: (field, PostgreSQL's value, the replay's) per differing field, or
    a row only one side has (`only`: "PostgreSQL" or "the replay")."""

    subject: str
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)
    only: str = ""

    def line(self) -> str:
        if self.only:
            return f"{self.subject}: only in {self.only}"
        return f"{self.subject}: " + "; ".join(
            f"{name} PostgreSQL {_shown(database)} replay {_shown(replayed)}"
            for name, database, replayed in self.fields
        )


@dataclass(slots=True)
class TableDiff:
    """One table's comparison: how many rows were compared and those that differ."""

    name: str
    fields: tuple[str, ...]
    # The step each field is stored to, where it is a decimal column.
    scales: tuple[Decimal | None, ...] = ()
    compared: int = 0
    differences: list[RowDifference] = field(default_factory=list)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return plain(value) or "0"
    return str(value)


_WIDE = Context(prec=80)


def _scales(model: type[Model], names: Iterable[str]) -> tuple[Decimal | None, ...]:
    """The step each column stores a decimal to (None for other columns)."""
    steps: list[Decimal | None] = []
    for name in names:
        column = model._meta.get_field(name)
        if isinstance(column, DecimalField):
            steps.append(Decimal(1).scaleb(-column.decimal_places))
        else:
            steps.append(None)
    return tuple(steps)


def _as_stored(row: tuple, scales: tuple[Decimal | None, ...]) -> tuple:
    """A replayed row as PostgreSQL would store it: decimals rounded to their column's scale
    (half away from zero, as PostgreSQL rounds numeric). The matcher keeps the unrounded
    values in memory and computes on with them, and so does the replay."""
    return tuple(
        value.quantize(step, rounding=ROUND_HALF_UP, context=_WIDE)
        if step is not None and isinstance(value, Decimal)
        else value
        for value, step in zip(row, scales, strict=True)
    )


def _compare(
    table: TableDiff,
    database: dict[Any, tuple],
    replayed: dict[Any, tuple],
    label: Callable[[Any], str],
    absent: tuple | None = None,
) -> None:
    """Compare two tables keyed alike; with `absent`, a missing row counts as that row."""
    for key in sorted(database.keys() | replayed.keys()):
        table.compared += 1
        ours = database.get(key, absent)
        theirs = replayed.get(key, absent)
        if theirs is not None and table.scales:
            theirs = _as_stored(theirs, table.scales)
        if ours is None or theirs is None:
            table.differences.append(
                RowDifference(label(key), only="PostgreSQL" if theirs is None else "the replay")
            )
            continue
        changed = [
            (name, a, b) for name, a, b in zip(table.fields, ours, theirs, strict=True) if a != b
        ]
        if changed:
            table.differences.append(RowDifference(label(key), changed))


ORDER_FIELDS = (
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
    "held_for_replace",
    "book_seq",
    "applied_seq",
)
TRADE_FIELDS = (
    "price",
    "quantity",
    "buyer_id",
    "seller_id",
    "maker_order_id",
    "taker_order_id",
    "aggressor_side",
    "quote_amount",
    "buyer_fee",
    "seller_fee",
)
POSITION_FIELDS = ("quantity", "average_cost", "realized_pnl")
BALANCE_FIELDS = _BUCKETS
BOOK_FIELDS = ("trade_seq", "last_price", "book_seq")
OPEN_ORDER_FIELDS = ("open_quantity",)


@dataclass
class ReplayReport:
    """What the replay applied, from where, and how PostgreSQL compares with it."""

    source: str
    source_reason: str
    commands: int
    applied: int
    skipped: dict[str, int]
    tables: list[TableDiff]
    not_replayable: dict[int, str]
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(len(table.differences) for table in self.tables)

    @property
    def is_clean(self) -> bool:
        return self.differences == 0

    def lines(self, *, limit: int = 20) -> list[str]:
        """The report as text: the source, per table its count and first `limit` differences,
        then the verdict."""
        source = "the orders topic" if self.source == TOPIC else "PostgreSQL's record of commands"
        lines = [
            f"replayed {self.commands:,} applied commands from {source} ({self.source_reason})",
        ]
        if self.skipped:
            lines.append(
                "  skipped as the matcher did: "
                + ", ".join(f"{count:,} {why}" for why, count in sorted(self.skipped.items()))
            )
        if self.not_replayable:
            symbols = sorted(set(self.not_replayable.values()))
            lines.append(
                f"  {len(self.not_replayable):,} orders are not replayable (placed before place "
                f"commands recorded their terms): {', '.join(symbols)} and the balances they "
                "move are left out of the comparison"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        for table in self.tables:
            found = len(table.differences)
            lines.append(
                f"{table.name}: {table.compared:,} compared, "
                f"{found:,} difference{'' if found == 1 else 's'}"
            )
            lines.extend(f"  {difference.line()}" for difference in table.differences[:limit])
            if found > limit:
                lines.append(f"  ... and {found - limit:,} more")
        if self.is_clean:
            lines.append("PostgreSQL is what the commands imply.")
        else:
            counts = ", ".join(
                f"{table.name} {len(table.differences):,}"
                for table in self.tables
                if table.differences
            )
            lines.append(
                f"PostgreSQL differs from what the commands imply: {self.differences:,} "
                f"difference{'' if self.differences == 1 else 's'} ({counts})."
            )
        return lines


def _derived_entries() -> Q:
    """The journal entries replay recomputes (see the module's docstring): every trade entry,
    and an order's holds and releases."""
    return Q(entry__kind=EntryKind.TRADE) | Q(
        entry__kind__in=[EntryKind.HOLD, EntryKind.RELEASE], entry__reference__startswith="order "
    )


def _inputs(replayer: Replayer) -> None:
    """Add the journal's input entries (everything not derived) to the replay's balances."""
    sums = (
        Posting.objects.exclude(_derived_entries())
        .values("account_id", "asset_id", "bucket")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "asset_id", "bucket", "total")
    )
    for account_id, asset_id, bucket, total in sums:
        replayer._move(account_id, asset_id, bucket, total)


def _comparison(replayer: Replayer) -> list[TableDiff]:
    """Each table of PostgreSQL against the replay, with what is not replayable left out."""
    instruments = {book.instrument.pk: book for book in replayer.books.values()}
    symbol = {pk: book.symbol for pk, book in instruments.items()}
    left_out = {pk for pk, book in instruments.items() if book.symbol in replayer.left_out}
    codes = dict(Asset.objects.values_list("id", "code"))
    kinds = dict(Account.objects.exclude(kind=Account.Kind.CUSTOMER).values_list("id", "kind"))

    def account(pk: int) -> str:
        kind = kinds.get(pk)
        return f"{kind} account {pk}" if kind else f"account {pk}"

    database: dict[Any, tuple]
    replayed: dict[Any, tuple]

    # orders
    orders = TableDiff("orders", ORDER_FIELDS, _scales(Order, ORDER_FIELDS))
    database = {
        row[0]: row[2:]
        for row in Order.objects.values_list("id", "instrument_id", *ORDER_FIELDS).iterator()
        if row[1] not in left_out
    }
    replayed = {
        pk: tuple(getattr(order, name) for name in ORDER_FIELDS)
        for pk, order in replayer.orders.items()
        if order.instrument_id not in left_out
    }
    owners = {pk: (order.instrument_id, order.account_id) for pk, order in replayer.orders.items()}
    _compare(
        orders,
        database,
        replayed,
        lambda pk: (
            f"order {pk} ({symbol[owners[pk][0]]}, account {owners[pk][1]})"
            if pk in owners
            else f"order {pk}"
        ),
    )

    # trades
    trades = TableDiff("trades", TRADE_FIELDS, _scales(Trade, TRADE_FIELDS))
    database = {
        (row[0], row[1]): row[2:]
        for row in Trade.objects.values_list("instrument_id", "seq", *TRADE_FIELDS).iterator()
        if row[0] not in left_out
    }
    replayed = {
        (trade.instrument_id, trade.seq): tuple(getattr(trade, name) for name in TRADE_FIELDS)
        for trade in replayer.trades
        if trade.instrument_id not in left_out
    }
    _compare(trades, database, replayed, lambda key: f"{symbol.get(key[0], key[0])} trade {key[1]}")

    # positions (a flat position and none are the same)
    positions = TableDiff("positions", POSITION_FIELDS, _scales(Position, POSITION_FIELDS))
    flat = (ZERO, ZERO, ZERO)
    database = {
        (row[0], row[1]): row[2:]
        for row in Position.objects.values_list(
            "account_id", "instrument_id", *POSITION_FIELDS
        ).iterator()
        if row[1] not in left_out
    }
    replayed = {
        key: tuple(getattr(position, name) for name in POSITION_FIELDS)
        for key, position in replayer.positions.items()
        if key[1] not in left_out
    }
    _compare(
        positions,
        database,
        replayed,
        lambda key: f"{account(key[0])} {symbol.get(key[1], key[1])}",
        absent=flat,
    )

    # balances: those an order of a book left out could have moved are left out too
    balances = TableDiff("balances", BALANCE_FIELDS, _scales(Balance, BALANCE_FIELDS))
    unknown: set[tuple[int, int]] = set()
    if left_out:
        assets = {
            pk: (book.instrument.base_id, book.instrument.quote_id)
            for pk, book in instruments.items()
            if pk in left_out
        }
        touched = Order.objects.filter(instrument_id__in=left_out).values_list(
            "account_id", "instrument_id"
        )
        for account_id, instrument_id in touched.distinct():
            unknown.update((account_id, asset) for asset in assets[instrument_id])
        unknown.update((replayer.fees_account.pk, quote) for _, quote in assets.values())
    database = {
        (row[0], row[1]): row[2:]
        for row in Balance.objects.values_list("account_id", "asset_id", *BALANCE_FIELDS)
        if (row[0], row[1]) not in unknown
    }
    replayed = {
        key: tuple(buckets[name] for name in BALANCE_FIELDS)
        for key, buckets in replayer.balances.items()
        if key not in unknown
    }
    _compare(
        balances,
        database,
        replayed,
        lambda key: f"{account(key[0])} {codes.get(key[1], key[1])}",
        absent=(ZERO, ZERO, ZERO),
    )

    # book states and the open orders of each book
    books = TableDiff("book states", BOOK_FIELDS, _scales(BookState, BOOK_FIELDS))
    database = {
        row[0]: row[1:]
        for row in BookState.objects.values_list("instrument_id", *BOOK_FIELDS)
        if row[0] not in left_out
    }
    replayed = {
        pk: tuple(getattr(book.state, name) for name in BOOK_FIELDS)
        for pk, book in instruments.items()
        if pk not in left_out
    }
    _compare(books, database, replayed, lambda pk: symbol.get(pk, str(pk)), absent=(0, None, 0))

    open_orders = TableDiff("open orders", OPEN_ORDER_FIELDS, _scales(Order, ("quantity",)))
    database = {
        (instrument_id, pk): (quantity - filled,)
        for pk, instrument_id, quantity, filled in Order.objects.filter(
            status__in=(Order.Status.NEW, Order.Status.PARTIALLY_FILLED)
        ).values_list("id", "instrument_id", "quantity", "filled_quantity")
        if instrument_id not in left_out
    }
    replayed = {}
    for pk, book in instruments.items():
        if pk in left_out:
            continue
        snapshot = book.engine.snapshot()
        for row in (*snapshot["resting"], *snapshot["stops"]):
            replayed[(pk, row["id"])] = (row["qty"] * book.lot,)
    _compare(
        open_orders,
        database,
        replayed,
        lambda key: f"{symbol.get(key[0], key[0])} book, order {key[1]}",
    )
    return [orders, trades, positions, balances, books, open_orders]


# --- the service ----------------------------------------------------------------------------------


def replay_run(
    *,
    source: str = AUTO,
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Rebuild every book, order, trade, position and balance from the recorded commands
    through the matcher's engine code and compare them with PostgreSQL; write nothing.

    `source`: "topic" (the `orders` topic; ReplayError if it lacks an applied command),
    "database" (PostgreSQL's record of commands) or "auto" (the topic when it holds every
    applied command, else the database). `progress` is called with a line now and then.
    Raises ReplayError for a bad source, RuntimeError inside a transaction.
    """
    if source not in SOURCES:
        raise ReplayError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if connection.in_atomic_block:
        raise RuntimeError("replay reads one snapshot of its own: call it outside a transaction")
    say = progress or (lambda line: None)
    with transaction.atomic():
        # First statement of the transaction: one snapshot for everything read, and no write.
        with connection.cursor() as cursor:
            cursor.execute(sql.READ_ONLY_SNAPSHOT)
        return _replay(source, say)


def _replay(source: str, say: Callable[[str], None]) -> ReplayReport:
    instruments = list(Instrument.objects.select_related("base", "quote").order_by("pk"))
    fees = Account.objects.filter(kind=Account.Kind.FEES).order_by("pk").first()
    replayer = Replayer(
        instruments=instruments,
        # (none yet: the matcher opens it with its first batch, so nothing was applied)
        fees_account=fees or Account(pk=0, kind=Account.Kind.FEES),
        calendar=Calendar.read(),
    )
    notes: list[str] = []

    # What the services wrote with each command, applied or not: orders and their holds,
    # replaces' extra holds, the rules each book started under.
    say("reading the commands' record")
    started: set[str] = set()
    now = datetime.datetime.now(datetime.UTC)
    written = _commands().filter(type__in=(PLACE, REPLACE, RULES_CHANGE)).order_by("id")
    for _, kind, key, raw, applied_at in _record_rows(written):
        data = kafka.decode(raw).data
        if kind == PLACE:
            try:
                replayer.placed(symbol=key, data=data, at=applied_at or now)
            except EnvelopeError as error:
                replayer.not_replayable[int(data["order_id"])] = key
                replayer.left_out.add(key)
                notes.append(f"{key}: {error}")
        elif kind == REPLACE:
            # (the service writes only well-formed replaces; the matcher skips any other)
            with contextlib.suppress(EnvelopeError):
                replayer.replace_held(command_decode(raw))
        elif key not in started:
            started.add(key)
            if not replayer.rules_before(key, data):
                notes.append(
                    f"{key}: its first rules change does not say the rules before it (written "
                    "before changes carried them); replayed under its present rules"
                )
    _inputs(replayer)

    applied = dict(
        _commands().filter(applied_at__isnull=False).values_list("id", "applied_at").iterator()
    )
    from_topic: list[Recorded] | None = None
    reason = "asked for"
    if source != DATABASE:
        say(f"reading the orders topic for {len(applied):,} applied commands")
        from_topic, reason = _topic_read(applied, say)
        if from_topic is None and source == TOPIC:
            raise ReplayError(f"cannot replay from the topic: {reason}; use --source database")
    commands: Iterable[Recorded]
    if from_topic is not None:
        commands, used = from_topic, TOPIC
    else:
        ordered = (
            _commands()
            .filter(applied_at__isnull=False)
            .order_by("applied_at", "applied_rank", "id")
        )
        commands = (Recorded(row[0], row[3]) for row in _record_rows(ordered))
        used = DATABASE
    total = len(applied)
    done = 0
    shown = time.monotonic()
    for batch, at in _batches(commands, applied):
        replayer.apply(batch, at)
        done += len(batch)
        if time.monotonic() - shown >= 1.0:
            shown = time.monotonic()
            say(f"applied {done:,} of {total:,} commands")
    say(f"applied {done:,} of {total:,} commands; comparing with PostgreSQL")
    return ReplayReport(
        source=used,
        source_reason=reason,
        commands=total,
        applied=replayer.applied,
        skipped=dict(replayer.skipped),
        tables=_comparison(replayer),
        not_replayable=replayer.not_replayable,
        notes=notes,
    )
