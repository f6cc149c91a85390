"""The matcher: the single writer of the books, their orders, trades, fills and positions.

`Matcher.run_batch` applies a batch of commands to in-memory books (trading.engine) and commits
everything the batch caused in ONE transaction ("group commit"): order states, trades, ledger
entries, positions, outgoing events (as outbox rows), the commands it applied
(`Outbox.applied_at`) and the consumed offset with the topic's id (`MatcherCheckpoint`). A
command already applied (by its outbox id) is skipped wherever it arrives: re-delivery never
double-fills (docs/decisions/0009). What a command does to its book's orders is the
`OrderLifecycle` it holds (lifecycle.py). No Kafka in here: worker.py is the loop."""

from __future__ import annotations

import hashlib

from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from accounts.services import ledger_post, platform_account_open
from trading import sql
from trading.matching.books import RULES_CHANGED, Book
from trading.matching.commands import (
    BOOK_COMMANDS,
    BOOK_DIGEST,
    Command,
)
from trading.matching.events import event_rows
from trading.matching.lifecycle import OrderLifecycle
from trading.matching.store import BatchResult, batch_write
from trading.models import (
    BookState,
    Instrument,
    MatcherCheckpoint,
    Order,
    Position,
    StreamSequence,
)
from tredye import kafka
from tredye.db import instances_fetch, prepared_cursor


class Matcher:
    """Applies commands to books and writes their effects; no Kafka consumer in here."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        # Shared with the lifecycle, which fills it: emptied in place, never replaced.
        self.positions: dict[tuple[int, int], Position] = {}
        self.fees_account: Account | None = None
        self.accounts: dict[int, Account] = {}
        self.stream_seq: dict[tuple[str, str], int] = {}
        self.topic = kafka.topic(kafka.ORDERS)
        # The broker's id of the topic being read, written with the checkpoint.
        self.topic_id = ""
        self.lifecycle = OrderLifecycle(
            account=self.account, fees_account=self._fees, positions=self.positions
        )

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
        self.lifecycle.calendar = self.lifecycle.calendar.fresh()
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
                self.lifecycle.close(book, order, Order.Status.CANCELED, RULES_CHANGED, result)
        for command in fresh:
            if command.kind in BOOK_COMMANDS and command.symbol not in self.books:
                result.dead.append((command.record, f"unknown instrument {command.symbol!r}"))
                continue
            if command.order_id in unknown:
                result.dead.append((command.record, unknown[command.order_id]))
                continue
            if command.kind == BOOK_DIGEST:
                # Answered at commit, after every other command of the batch.
                asked = result.digests.get(command.symbol, 0)
                result.digests[command.symbol] = max(asked, command.outbox_id or 0)
                continue
            book = self.books[command.symbol]
            self.lifecycle.apply(book, command, result, ts)
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
            rows = prepared_cursor().execute(sql.APPLIED, {"ids": ids}, prepare=True).fetchall()
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
                for order in instances_fetch(Order, sql.ORDERS_BY_ID, {"ids": list(wanted)})
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

    # -- commit ---------------------------------------------------------------------------
    def _next_seq(self, topic: str, key: str) -> int:
        seq = self.stream_seq.get((topic, key))
        if seq is None:
            row = StreamSequence.objects.filter(topic=topic, key=key).first()
            seq = row.seq if row else 0
        seq += 1
        self.stream_seq[(topic, key)] = seq
        return seq

    def _commit(self, result: BatchResult) -> None:
        rows = event_rows(self.books.values(), result, self._next_seq)
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
            if result.digests:
                self._digests_write(result)
        for book in self.books.values():
            book.dirty = False

    def _digests_write(self, result: BatchResult) -> None:
        """Answer the batch's `book.digest` commands: for each book asked, the digest of its
        engine's live orders and, in the same statement and transaction (after the batch's
        writes), that of its open order rows, into its BookState."""
        books = [self.books[symbol] for symbol in sorted(result.digests)]
        digests = [memory_digest(book) for book in books]
        params = {
            "now": result.now,
            "instrument": [book.instrument.pk for book in books],
            "tick": [book.tick for book in books],
            "lot": [book.lot for book in books],
            "request": [result.digests[book.symbol] for book in books],
            "memory": [digest for digest, _ in digests],
            "orders": [count for _, count in digests],
        }
        prepared_cursor().execute(sql.BOOK_DIGEST_WRITE, params)


def memory_digest(book: Book) -> tuple[str, int]:
    """The digest of a book's live orders as its engine holds them, and their count.

    The canonical form, which `sql.BOOK_DIGEST_WRITE` builds from the open order rows too:
    one line per order in id order, `id side price open R|S` (price in ticks, open quantity in
    lots, R resting or S a stop not yet triggered), joined by newlines, hashed with SHA-256.
    """
    views = sorted(book.engine.orders(), key=lambda view: view.id)
    text = "\n".join(
        f"{view.id} {view.side.name.lower()} {view.price} {view.qty} {'S' if view.pending else 'R'}"
        for view in views
    )
    return hashlib.sha256(text.encode()).hexdigest(), len(views)
