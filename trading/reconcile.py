"""Reconciliation: prove that PostgreSQL, the matcher's books and the `trades` topic agree,
and keep every break found until an operator resolves it with a note.

`reconciliation_run` (the Celery task every RECONCILE_INTERVAL_S, and `manage.py reconcile`)
checks, in this order:

- books: first asks the matcher for a digest of every book (`book.digest` commands through the
  outbox), so that it answers while the rest runs;
- ledger: every invariant `accounts.selectors.ledger_verify` proves (trading registers held
  equals open orders, positions equal fills, order fills equal trades), each break re-read as
  rows from the same statements for what it is about;
- positions: each account's fills folded in trade order through
  `trading.matching.positions.position_after`, the one rule of positions: quantity, average
  cost and realised P&L as stored;
- sequences: each instrument's trades numbered 1..BookState.trade_seq without a hole; the
  matcher's book and account event streams (outbox rows against StreamSequence) without a
  hole; each order's cancel and replace commands numbered 1..command_seq;
- trades topic: every trade of the snapshot on `trades` exactly once, every trade there in
  PostgreSQL (by symbol and trade number), history the broker lost reported as such;
- books: the digests compared (memory against rows, computed by the matcher in one
  transaction).

The database checks read one REPEATABLE READ snapshot; the topic is read after it. A break is a
`ReconciliationBreak` identified by (kind, subject) while open: found again, it only moves
`last_seen_at` and `run`; not found again, it stays open until `break_resolve`. Nothing is
fixed here. docs/decisions/0016-reconciliation.md says why it works this way.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner import murmur2

from accounts import sql as accounts_sql
from accounts.selectors import ledger_verify
from trading import sql
from trading.exceptions import BreakNotResolvable
from trading.matching.commands import BOOK_DIGEST, CANCEL, REPLACE
from trading.matching.positions import position_after
from trading.models import (
    BookState,
    Instrument,
    Order,
    Outbox,
    ReconciliationBreak,
    ReconciliationRun,
    RelayCursor,
)
from trading.units import ZERO
from tredye import kafka
from tredye.metrics import RECONCILIATION_OPEN_BREAKS

logger = logging.getLogger(__name__)

# Every kind of break, with what an operator reads. The one home of the kinds (the model keeps
# them as free text).
KINDS: dict[str, str] = {
    # the ledger's invariants (accounts.selectors.ledger_verify)
    "entry_unbalanced": "Journal entry does not sum to zero",
    "entry_without_postings": "Journal entry has no postings",
    "asset_sum_mismatch": "Asset does not sum to zero over all accounts",
    "balance_mismatch": "Balance differs from its postings",
    "negative_balance": "Balance bucket is negative",
    "balance_kind_mismatch": "Balance row names the wrong account kind",
    "posting_too_precise": "Posting finer than its asset's precision",
    "held_mismatch": "Held differs from what the open orders hold",
    "order_fill_mismatch": "Order's filled quantity differs from its trades",
    "ledger_invariant": "Another ledger invariant is broken",
    # positions (the fold of fills) and the ledger's position invariant
    "position_mismatch": "Position differs from its fills",
    # the trades topic
    "trade_not_on_topic": "Trade in PostgreSQL missing from the trades topic",
    "trade_not_in_database": "Trade on the trades topic missing from PostgreSQL",
    "trade_duplicated_on_topic": "Trade on the trades topic more than once",
    "trade_record_invalid": "Record on the trades topic is not a trade envelope",
    # the matcher's books
    "book_mismatch": "Matcher's book differs from the open orders",
    # sequences
    "trade_sequence_gap": "Instrument's trade numbers have a gap",
    "book_event_gap": "Instrument's book event numbers have a gap",
    "order_event_gap": "Account's order event numbers have a gap",
    "order_command_gap": "Order's command numbers have a gap",
}

# The checks, in the order they run (keys of `ReconciliationRun.checked`).
CHECKS = ("ledger", "positions", "sequences", "trades_topic", "books")

# Breaks stored per kind and run at most (a range of trade numbers is one break); the count
# of the rest is in the run's report.
MAX_BREAKS_PER_KIND = 200
# How long the topic must stay quiet, once every partition reached the relay's cursor, to be
# taken as read to its end (the broker's end offsets are not trusted); and at most, when a
# cursor is never reached (records the broker lost at the tail).
TOPIC_IDLE_MS = 1000
TOPIC_GIVE_UP_IDLE_MS = 5000
TOPIC_MAX_S = 120.0

_LOCK = (zlib.crc32(b"tredye.trading.reconcile") - 2**31, 1)

# progress(check, done, total): `total` None when unknown.
Progress = Callable[[str, int, int | None], None]


def _no_progress(check: str, done: int, total: int | None) -> None:
    return None


@dataclass
class Found:
    """A break as one run found it, before it is stored."""

    kind: str
    subject: str
    detail: str
    involved: dict[str, Any] = field(default_factory=dict)


class Breaks:
    """The breaks of one run, one per (kind, subject): a second finding adds its detail."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], Found] = {}
        self.left_out: dict[str, int] = defaultdict(int)

    def add(self, kind: str, subject: str, detail: str, **involved: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown break kind {kind!r}")
        subject = subject[:200]
        key = (kind, subject)
        known = self.found.get(key)
        if known is not None:
            if detail not in known.detail:
                known.detail += f"\n{detail}"
            known.involved |= involved
            return
        if sum(1 for k, _ in self.found if k == kind) >= MAX_BREAKS_PER_KIND:
            self.left_out[kind] += 1
            return
        self.found[key] = Found(kind, subject, detail, involved)

    def count(self) -> int:
        return len(self.found)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def reconciliation_run(
    *, trigger: str, progress: Progress | None = None, digest: bool = True
) -> ReconciliationRun:
    """Check every invariant, store each break found, and return the finished run.

    `digest` False skips the matcher round trip (books not checked). The run is saved as
    failed, and the error raised again, when a check cannot run (e.g. PostgreSQL is lost);
    a broker that does not answer leaves the topic unchecked (said so), not the run failed.
    """
    report = progress or _no_progress
    run = ReconciliationRun.objects.create(trigger=trigger[:150])
    breaks = Breaks()
    checked: dict[str, Any] = {}
    try:
        asked = _digests_ask() if digest else {}
        snapshot = _database_checks(breaks, checked, report)
        _trades_topic_check(snapshot, breaks, checked, report)
        if digest:
            _digests_compare(asked, breaks, checked, report)
        else:
            checked["books"] = {"not_checked": "skipped (--no-digest)"}
        new, again = _breaks_store(run, breaks)
    except Exception as error:
        run.status = ReconciliationRun.Status.FAILED
        run.finished_at = timezone.now()
        run.checked = checked
        run.report = "Reconciliation failed:\n" + "".join(
            traceback.format_exception_only(type(error), error)
        )
        run.save(update_fields=["status", "finished_at", "checked", "report"])
        logger.exception("reconciliation #%s failed", run.pk)
        raise
    still_open = ReconciliationBreak.objects.filter(resolved_at__isnull=True).count()
    RECONCILIATION_OPEN_BREAKS.set(still_open)
    checked["breaks"] = {
        "found": breaks.count(),
        "new": len(new),
        "seen_again": len(again),
        "open": still_open,
        "left_out": dict(breaks.left_out),
    }
    run.status = (
        ReconciliationRun.Status.BREAKS if breaks.count() else ReconciliationRun.Status.CLEAN
    )
    run.finished_at = timezone.now()
    run.checked = checked
    run.report = report_text(run, breaks, new)
    run.save(update_fields=["status", "finished_at", "checked", "report"])
    return run


def break_resolve(*, break_id: int, user: AbstractBaseUser, note: str) -> ReconciliationBreak:
    """Mark an open break resolved by `user`, with `note` saying what was done about it.

    Raises BreakNotResolvable (a ValueError) for an empty note, an unknown break or one
    resolved already; nothing is changed then. Not durable: the admin calls it from its own
    transaction.
    """
    text = (note or "").strip()
    if not text:
        raise BreakNotResolvable(
            "a note is required: say what was found and done", code="note_required"
        )
    with transaction.atomic():
        found = ReconciliationBreak.objects.select_for_update().filter(pk=break_id).first()
        if found is None:
            raise BreakNotResolvable(f"no break #{break_id}", code="unknown_break")
        if found.resolved_at is not None:
            raise BreakNotResolvable(
                f"break #{break_id} was resolved at {found.resolved_at:%Y-%m-%d %H:%M:%S}",
                code="already_resolved",
            )
        found.resolved_at = timezone.now()
        found.resolved_by = user  # type: ignore[assignment]
        found.resolution_note = text
        found.save(update_fields=["resolved_at", "resolved_by", "resolution_note"])
        transaction.on_commit(_gauge_refresh)
    return found


def _gauge_refresh() -> None:
    RECONCILIATION_OPEN_BREAKS.set(
        ReconciliationBreak.objects.filter(resolved_at__isnull=True).count()
    )


# ---------------------------------------------------------------------------------------------
# The database checks, in one snapshot
# ---------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What the topic check needs of the database, read in the checks' snapshot."""

    trades: dict[str, set[int]]
    unsent: dict[str, set[int]]
    cursors: dict[int, int]
    cursor_ids: set[str]


def _database_checks(breaks: Breaks, checked: dict[str, Any], progress: Progress) -> Snapshot:
    with transaction.atomic():
        if not connection.in_atomic_block or len(connection.atomic_blocks) == 1:
            with connection.cursor() as cursor:
                cursor.execute(sql.READ_ONLY_SNAPSHOT)
        progress("ledger", 0, None)
        _ledger_check(breaks, checked)
        progress("ledger", 1, 1)
        _positions_check(breaks, checked, progress)
        progress("sequences", 0, 3)
        _sequences_check(breaks, checked, progress)
        return _snapshot_read()


# The ledger's invariants: kind, the statements that check it (in ledger_verify's order), and
# the subject and involved objects of one of their rows.
Row = tuple[Any, ...]
_ACCOUNT_ID = re.compile(r"#(\d+)")


def _account_label(label: str) -> tuple[str, int | None]:
    """An account as a ledger statement labels it ("account #12 (alice)", "fees account #3"):
    the label without the user's name, and the id."""
    match = _ACCOUNT_ID.search(label)
    return label.split(" (", 1)[0], int(match.group(1)) if match else None


def _balance_subject(row: Row) -> tuple[str, dict[str, Any]]:
    label, account = _account_label(str(row[0]))
    return f"{label} {row[1]}", {"account": account, "asset": row[1]}


def _ledger_kinds() -> dict[str, tuple[str, tuple[str, ...], Callable[[Row], Any]]]:
    # Built when called: trading's statements are registered when its app is ready.
    return {
        "entry_balanced": (
            "entry_unbalanced",
            (accounts_sql.ENTRY_BALANCED,),
            lambda r: (f"journal entry #{r[0]} {r[1]}", {"entry": r[0], "asset": r[1]}),
        ),
        "entry_has_postings": (
            "entry_without_postings",
            (accounts_sql.ENTRY_HAS_POSTINGS,),
            lambda r: (f"journal entry #{r[0]}", {"entry": r[0]}),
        ),
        "asset_sums_to_zero": (
            "asset_sum_mismatch",
            (accounts_sql.BALANCES_SUM_TO_ZERO, accounts_sql.POSTINGS_SUM_TO_ZERO),
            lambda r: (f"{r[0]} over all accounts", {"asset": r[0]}),
        ),
        "balance_equals_postings": (
            "balance_mismatch",
            (accounts_sql.BALANCE_EQUALS_POSTINGS,),
            _balance_subject,
        ),
        "no_negative_bucket": (
            "negative_balance",
            (accounts_sql.NO_NEGATIVE_BUCKET,),
            _balance_subject,
        ),
        "balance_kind_matches_account": (
            "balance_kind_mismatch",
            (accounts_sql.BALANCE_KIND_MATCHES_ACCOUNT,),
            lambda r: (f"balance #{r[0]}", {"balance": r[0], "account": r[1]}),
        ),
        "posting_within_precision": (
            "posting_too_precise",
            (accounts_sql.POSTING_WITHIN_PRECISION,),
            lambda r: (f"posting #{r[0]}", {"posting": r[0], "entry": r[1], "asset": r[2]}),
        ),
        "held_equals_open_orders": (
            "held_mismatch",
            (sql.HELD_EQUALS_OPEN_ORDERS,),
            lambda r: (f"account #{r[0]} {r[1]}", {"account": r[0], "asset": r[1]}),
        ),
        "position_equals_fills": (
            "position_mismatch",
            (sql.POSITION_EQUALS_FILLS,),
            lambda r: (f"account #{r[0]} {r[1]}", {"account": r[0], "instrument": r[1]}),
        ),
        "order_filled_equals_trades": (
            "order_fill_mismatch",
            (sql.ORDER_FILLED_EQUALS_TRADES,),
            lambda r: (f"order #{r[0]}", {"order": r[0]}),
        ),
    }


def _ledger_check(breaks: Breaks, checked: dict[str, Any]) -> None:
    """ledger_verify, then, for each invariant it found broken, its rows read again (same
    statements, same snapshot, same order) for what each break is about."""
    found = ledger_verify()
    kinds = _ledger_kinds()
    by_invariant: dict[str, list[str]] = defaultdict(list)
    for item in found:
        by_invariant[item.invariant].append(item.detail)
    for invariant, details in by_invariant.items():
        shown = [detail for detail in details if not detail.startswith("…")]
        known = kinds.get(invariant)
        if known is None:  # registered by an app this module does not know yet
            for detail in shown:
                breaks.add("ledger_invariant", f"{invariant}: {detail}", detail)
            continue
        kind, statements, subject_of = known
        rows: list[Row] = []
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows += cursor.fetchall()
        for index, row in enumerate(rows):
            subject, involved = subject_of(row)
            detail = shown[index] if index < len(shown) else f"{KINDS[kind]}: {row}"
            breaks.add(kind, subject, f"[{invariant}] {detail}", **involved)
    checked["ledger"] = {
        "invariants": sorted({*kinds, *by_invariant}),
        "broken": {invariant: len(details) for invariant, details in by_invariant.items()},
    }


def _positions_check(breaks: Breaks, checked: dict[str, Any], progress: Progress) -> None:
    """Fold every fill, in trade order, through the one rule of positions; compare with the
    stored positions exactly (the rule rounds to the stored places)."""
    total = sum(BookState.objects.values_list("trade_seq", flat=True))
    progress("positions", 0, total)
    folded: dict[tuple[int, int], tuple[Decimal, Decimal, Decimal]] = {}
    flat = (ZERO, ZERO, ZERO)
    done = 0
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql.RECONCILE_FILLS)
        while rows := cursor.fetchmany(20_000):
            for instrument_id, buyer_id, seller_id, quantity, price in rows:
                key = (buyer_id, instrument_id)
                folded[key] = position_after(*folded.get(key, flat), quantity, price)
                key = (seller_id, instrument_id)
                folded[key] = position_after(*folded.get(key, flat), -quantity, price)
            done += len(rows)
            progress("positions", done, max(total, done))
    compared = 0
    stored: set[tuple[int, int]] = set()
    symbols = dict(Instrument.objects.values_list("pk", "symbol"))
    with connection.cursor() as cursor:
        cursor.execute(sql.RECONCILE_POSITIONS)
        for account_id, instrument_id, symbol, quantity, cost, pnl in cursor.fetchall():
            key = (account_id, instrument_id)
            stored.add(key)
            compared += 1
            _position_compare(breaks, account_id, symbol, (quantity, cost, pnl), folded.get(key))
    for key in folded.keys() - stored:
        account_id, instrument_id = key
        _position_compare(breaks, account_id, symbols.get(instrument_id, "?"), None, folded[key])
    checked["positions"] = {"fills": 2 * done, "positions": compared}


def _position_compare(
    breaks: Breaks,
    account_id: int,
    symbol: str,
    stored: tuple[Decimal, Decimal, Decimal] | None,
    folded: tuple[Decimal, Decimal, Decimal] | None,
) -> None:
    have = stored or (ZERO, ZERO, ZERO)
    want = folded or (ZERO, ZERO, ZERO)
    wrong = []
    for name, value, expected in zip(
        ("quantity", "average cost", "realised P&L"), have, want, strict=True
    ):
        if value != expected:
            wrong.append(f"{name} {value.normalize():f}, its fills give {expected.normalize():f}")
    if wrong:
        where = "" if stored is not None else " (no position row)"
        breaks.add(
            "position_mismatch",
            f"account #{account_id} {symbol}",
            f"[fills folded] account #{account_id} {symbol}{where}: " + "; ".join(wrong),
            account=account_id,
            instrument=symbol,
        )


def _ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted numbers as runs of consecutive ones: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _sequences_check(breaks: Breaks, checked: dict[str, Any], progress: Progress) -> None:
    """Trades numbered 1..trade_seq per instrument; the book and order (account) event streams
    without a hole; each order's cancel/replace commands numbered 1..command_seq."""
    counts = {"trade_ranges": 0, "event_ranges": 0, "orders": 0}
    with connection.cursor() as cursor:
        cursor.execute(sql.TRADE_SEQUENCE_HOLES)
        holes = [((symbol, what), first, last) for symbol, first, last, what in cursor]
        for (symbol, what), first, last in _merged(holes):
            counts["trade_ranges"] += 1
            numbers = _span(first, last)
            if what == "missing":
                detail = f"{symbol}: no trade numbered {numbers}"
            else:
                detail = f"{symbol}: trades {numbers} are numbered past the book's trade counter"
            breaks.add(
                "trade_sequence_gap",
                f"{symbol} trades {numbers}",
                detail,
                instrument=symbol,
                seq=[first, last],
            )
        progress("sequences", 1, 3)
        cursor.execute(sql.STREAM_SEQUENCE_HOLES, {"topics": [kafka.BOOK, kafka.ACCOUNT_EVENTS]})
        rows = [((topic, key, what), first, last) for topic, key, first, last, what in cursor]
        for (topic, key, what), first, last in _merged(rows):
            counts["event_ranges"] += 1
            numbers = _span(first, last)
            involved: dict[str, Any]
            if topic == kafka.BOOK:
                kind, subject = "book_event_gap", f"{key} book events {numbers}"
                involved = {"instrument": key}
            else:
                kind, subject = "order_event_gap", f"account #{key} order events {numbers}"
                involved = {"account": int(key) if key.isdigit() else key}
            text = {
                "missing": "no event numbered",
                "repeated": "more than one event numbered",
                "beyond": "events numbered past the stream's last number:",
            }[what]
            breaks.add(
                kind, subject, f"{topic} {key}: {text} {numbers}", seq=[first, last], **involved
            )
        progress("sequences", 2, 3)
        cursor.execute(sql.ORDER_COMMAND_GAPS, {"topic": kafka.ORDERS, "types": [CANCEL, REPLACE]})
        for order_id, symbol, command_seq, applied_seq, found, numbers, top in cursor.fetchall():
            counts["orders"] += 1
            breaks.add(
                "order_command_gap",
                f"order #{order_id}",
                f"order #{order_id} ({symbol}): numbered {command_seq} commands and applied up "
                f"to {applied_seq}; the outbox holds {found} cancel/replace commands, {numbers} "
                f"distinct numbers, the highest {top}",
                order=order_id,
                instrument=symbol,
            )
        progress("sequences", 3, 3)
    checked["sequences"] = {"broken": counts}


def _merged(rows: Iterable[Any]) -> list[tuple[Any, int, int]]:
    """Rows (what, first, last) with adjacent or overlapping ranges of the same `what` joined,
    in order: single numbers (one row per trade or event) become ranges."""
    merged: list[tuple[Any, int, int]] = []
    for what, first, last in sorted(rows, key=lambda row: (row[0], row[1])):
        if merged and merged[-1][0] == what and first <= merged[-1][2] + 1:
            merged[-1] = (what, merged[-1][1], max(last, merged[-1][2]))
        else:
            merged.append((what, first, last))
    return merged


def _snapshot_read() -> Snapshot:
    """The trades, those not sent yet, and the relay's cursors of the `trades` topic."""
    trades: dict[str, set[int]] = {}
    unsent: dict[str, set[int]] = defaultdict(set)
    with connection.cursor() as cursor:
        cursor.execute(sql.RECONCILE_TRADES)
        for symbol, seqs in cursor.fetchall():
            trades[symbol] = set(seqs)
        cursor.execute(sql.RECONCILE_TRADES_UNSENT, {"topic": kafka.TRADES})
        for symbol, seq in cursor.fetchall():
            unsent[symbol].add(seq)
    cursors: dict[int, int] = {}
    cursor_ids: set[str] = set()
    for partition, offset, topic_id in RelayCursor.objects.filter(
        topic=kafka.topic(kafka.TRADES)
    ).values_list("partition", "offset", "topic_id"):
        cursors[partition] = offset
        cursor_ids.add(topic_id)
    return Snapshot(trades=trades, unsent=dict(unsent), cursors=cursors, cursor_ids=cursor_ids)


# ---------------------------------------------------------------------------------------------
# The trades topic
# ---------------------------------------------------------------------------------------------


@dataclass
class TopicRead:
    """What is on the `trades` topic: each symbol's trade numbers and how often each is there."""

    topic_id: str = ""
    partitions: list[int] = field(default_factory=list)
    first_offsets: dict[int, int] = field(default_factory=dict)
    last_offsets: dict[int, int] = field(default_factory=dict)
    seqs: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    invalid: list[tuple[int, int, str]] = field(default_factory=list)
    records: int = 0
    complete: bool = True


def topic_trades_read(
    *, physical: str, cursors: dict[int, int], progress: Progress = _no_progress
) -> TopicRead:
    """Read every record of the trades topic from its first offset. The end is where every
    partition has passed the relay's cursor and nothing more came for TOPIC_IDLE_MS (or
    nothing came for TOPIC_GIVE_UP_IDLE_MS): the broker's end offsets are not trusted."""
    # A long fetch wait, as the relay's tail scan: the local broker answers a fetch on a long
    # partition only after scanning it, and empty if that takes longer than the wait.
    consumer = kafka.consumer(
        auto_offset_reset="earliest", max_poll_records=5000, fetch_max_wait_ms=500
    )
    read = TopicRead()
    try:
        read.partitions = sorted(consumer.partitions_for_topic(physical) or ())
        read.topic_id = kafka.topic_id(consumer, physical)
        if not read.partitions:
            return read
        assigned = [TopicPartition(physical, p) for p in read.partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        started = quiet_since = time.monotonic()
        expected = sum(cursors.values()) + len(cursors)
        while True:
            batch = consumer.poll(timeout_ms=100)
            now = time.monotonic()
            if not batch:
                quiet_ms = (now - quiet_since) * 1000
                reached = all(
                    read.last_offsets.get(p, -1) >= offset for p, offset in cursors.items()
                )
                if (reached and quiet_ms >= TOPIC_IDLE_MS) or quiet_ms >= TOPIC_GIVE_UP_IDLE_MS:
                    break
                if now - started > TOPIC_MAX_S:
                    read.complete = False
                    break
                continue
            quiet_since = now
            for tp, records in batch.items():
                read.first_offsets.setdefault(tp.partition, records[0].offset)
                read.last_offsets[tp.partition] = records[-1].offset
                for record in records:
                    _record_take(read, tp.partition, record)
            progress("trades_topic", read.records, max(expected, read.records))
    finally:
        consumer.close()
    return read


def _record_take(read: TopicRead, partition: int, record: Any) -> None:
    read.records += 1
    try:
        envelope = kafka.decode(record.value)
    except kafka.EnvelopeError as error:
        read.invalid.append((partition, record.offset, str(error)))
        return
    numbers = read.seqs[envelope.key]
    numbers[envelope.seq] = numbers.get(envelope.seq, 0) + 1


def _partition_of(symbol: str, partitions: list[int]) -> int:
    """The partition the relay's producer sends a symbol's records to (the default
    partitioner: murmur2 of the key)."""
    return partitions[(murmur2(symbol.encode()) & 0x7FFFFFFF) % len(partitions)]


def _trades_topic_check(
    snapshot: Snapshot, breaks: Breaks, checked: dict[str, Any], progress: Progress
) -> None:
    physical = kafka.topic(kafka.TRADES)
    in_database = sum(len(seqs) for seqs in snapshot.trades.values())
    progress("trades_topic", 0, in_database)
    try:
        read = topic_trades_read(physical=physical, cursors=snapshot.cursors, progress=progress)
    except KafkaError as error:
        checked["trades_topic"] = {"not_checked": f"the broker did not answer: {error}"}
        return
    figures: dict[str, Any] = {
        "topic": physical,
        "trades_in_database": in_database,
        "records_on_topic": read.records,
        "in_flight": sum(len(seqs) for seqs in snapshot.unsent.values()),
    }
    checked["trades_topic"] = figures
    if not read.complete:
        figures["not_checked"] = f"the topic was not read to its end in {TOPIC_MAX_S:.0f} s"
        return
    known_ids = {topic_id for topic_id in snapshot.cursor_ids if topic_id}
    sent = in_database - figures["in_flight"]
    # The relay keeps a cursor, with the topic's id, for every topic it wrote: a topic with
    # another id, or none when trades were sent, is not the topic they were sent to.
    replaced = bool(read.topic_id and known_ids and known_ids != {read.topic_id}) or (
        not snapshot.cursors and sent > 0
    )
    trimmed = {p for p, first in read.first_offsets.items() if first > 0}
    history: list[str] = []
    if not read.partitions:
        if in_database:
            history.append(f"{physical} does not exist on the broker")
        replaced = True
    elif replaced:
        history.append(
            f"{physical} is not the topic the relay wrote (id {read.topic_id or 'unknown'}, "
            f"cursors kept for {', '.join(sorted(known_ids)) or 'no topic'}): the relay sends "
            "every trade again when it sees a new topic"
        )
    for partition in sorted(trimmed):
        history.append(
            f"{physical}[{partition}] starts at offset {read.first_offsets[partition]}: "
            "the broker no longer holds its older records"
        )
    lost = 0
    missing: dict[str, set[int]] = {}
    extra: dict[str, set[int]] = {}
    duplicated: dict[str, set[int]] = {}
    for symbol in sorted(snapshot.trades.keys() | read.seqs.keys()):
        in_db = snapshot.trades.get(symbol, set())
        on_topic = read.seqs.get(symbol, {})
        gone = in_db - on_topic.keys() - snapshot.unsent.get(symbol, set())
        if replaced:
            lost += len(gone)
            gone = set()
        elif read.partitions and _partition_of(symbol, read.partitions) in trimmed:
            oldest = min(on_topic, default=None)
            older = {seq for seq in gone if oldest is None or seq < oldest}
            lost += len(older)
            gone -= older
        if gone:
            missing[symbol] = gone
        more = on_topic.keys() - in_db
        if more:
            extra[symbol] = more
        twice = {seq for seq, count in on_topic.items() if count > 1}
        if twice:
            duplicated[symbol] = twice
    _newer_than_snapshot(extra)
    for kind, by_symbol, says in (
        ("trade_duplicated_on_topic", duplicated, f"are on {physical} more than once"),
        ("trade_not_on_topic", missing, f"are in PostgreSQL, sent, and not on {physical}"),
        ("trade_not_in_database", extra, f"are on {physical} and not in PostgreSQL"),
    ):
        for symbol, seqs in by_symbol.items():
            for first, last in _ranges(seqs):
                numbers = _span(first, last)
                breaks.add(
                    kind,
                    f"{symbol} trades {numbers}",
                    f"{symbol} trades {numbers} {says}",
                    instrument=symbol,
                    seq=[first, last],
                )
    for partition, offset, reason in read.invalid[:MAX_BREAKS_PER_KIND]:
        breaks.add(
            "trade_record_invalid",
            f"{physical}[{partition}]@{offset}",
            f"{physical}[{partition}] offset {offset}: {reason}",
            partition=partition,
            offset=offset,
        )
    if history:
        figures["history_not_on_topic"] = history
        figures["trades_not_on_topic_as_history"] = lost


def _newer_than_snapshot(extra: dict[str, set[int]]) -> None:
    """Drop from `extra` the trades that are in PostgreSQL now (made after the snapshot)."""
    pairs = [(symbol, seq) for symbol, seqs in extra.items() for seq in seqs]
    if not pairs:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            sql.RECONCILE_TRADES_FOUND,
            {"symbols": [s for s, _ in pairs], "seqs": [n for _, n in pairs]},
        )
        for symbol, seq in cursor.fetchall():
            extra[symbol].discard(seq)
    for symbol in [symbol for symbol, seqs in extra.items() if not seqs]:
        del extra[symbol]


# ---------------------------------------------------------------------------------------------
# The matcher's books
# ---------------------------------------------------------------------------------------------


def _digests_ask() -> dict[str, int]:
    """Write one `book.digest` command per instrument that is not closed; return each symbol's
    command id (the matcher writes it back as `BookState.digest_request`)."""
    symbols = list(
        Instrument.objects.exclude(status=Instrument.Status.CLOSED)
        .order_by("symbol")
        .values_list("symbol", flat=True)
    )
    now = kafka.now_ms()
    with transaction.atomic():
        rows = Outbox.objects.bulk_create(
            [
                Outbox(topic=kafka.ORDERS, key=symbol, type=BOOK_DIGEST, seq=0, ts=now, data={})
                for symbol in symbols
            ]
        )
    return {row.key: row.pk for row in rows if row.pk is not None}


def _digests_compare(
    asked: dict[str, int], breaks: Breaks, checked: dict[str, Any], progress: Progress
) -> None:
    """Wait (at most RECONCILE_DIGEST_TIMEOUT_S) for the matcher's answers; a book whose
    digests differ is a break, a book not answered in time is reported unchecked."""
    deadline = time.monotonic() + settings.RECONCILE_DIGEST_TIMEOUT_S
    answers: dict[str, tuple[str, str, int, Any]] = {}
    while True:
        rows = BookState.objects.filter(instrument__symbol__in=list(asked)).values_list(
            "instrument__symbol",
            "digest_request",
            "memory_digest",
            "rows_digest",
            "digest_orders",
            "digest_at",
        )
        for symbol, request, memory, stored, orders, at in rows:
            if request >= asked[symbol]:
                answers[symbol] = (memory, stored, orders, at)
        progress("books", len(answers), len(asked))
        if len(answers) == len(asked) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for symbol, (memory, stored, orders, at) in sorted(answers.items()):
        if memory == stored:
            continue
        open_rows = Order.objects.filter(
            instrument__symbol=symbol,
            status__in=[Order.Status.NEW, Order.Status.PARTIALLY_FILLED],
        ).count()
        breaks.add(
            "book_mismatch",
            symbol,
            f"{symbol}: the matcher's book ({orders} live orders, digest {memory[:16]}) differs "
            f"from its open order rows (digest {stored[:16]}; {open_rows} open now) at "
            f"{at:%Y-%m-%d %H:%M:%S.%f}",
            instrument=symbol,
            memory_orders=orders,
        )
    missing = sorted(asked.keys() - answers.keys())
    figures: dict[str, Any] = {"asked": len(asked), "answered": len(answers)}
    if missing:
        figures["not_checked"] = "the matcher did not answer: " + ", ".join(missing)
    checked["books"] = figures


# ---------------------------------------------------------------------------------------------
# Storing and reporting
# ---------------------------------------------------------------------------------------------


def _breaks_store(
    run: ReconciliationRun, breaks: Breaks
) -> tuple[list[ReconciliationBreak], list[int]]:
    """Store the run's breaks: an open break of the same kind and subject is seen again
    (`last_seen_at`, `run`), any other is new (an ERROR line each). One run at a time."""
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql.RECONCILE_STORE_LOCK, list(_LOCK))
        open_ids = {
            (kind, subject): pk
            for pk, kind, subject in ReconciliationBreak.objects.filter(
                resolved_at__isnull=True
            ).values_list("pk", "kind", "subject")
        }
        again = [open_ids[key] for key in breaks.found if key in open_ids]
        if again:
            ReconciliationBreak.objects.filter(pk__in=again).update(last_seen_at=now, run=run)
        new = ReconciliationBreak.objects.bulk_create(
            [
                ReconciliationBreak(
                    kind=found.kind,
                    subject=found.subject,
                    detail=found.detail,
                    involved=found.involved,
                    run=run,
                    found_at=now,
                    last_seen_at=now,
                )
                for key, found in breaks.found.items()
                if key not in open_ids
            ]
        )
    for row in new:
        logger.error(
            "reconciliation #%s: new break %s (%s): %s — %s",
            run.pk,
            row.kind,
            KINDS[row.kind],
            row.subject,
            row.detail.splitlines()[0],
        )
    return new, again


def report_text(run: ReconciliationRun, breaks: Breaks, new: list[ReconciliationBreak]) -> str:
    """The run as an operator reads it: what was checked, what could not be, each break."""
    checked = run.checked
    lines = [f"Reconciliation #{run.pk} ({run.trigger}): {run.get_status_display()}"]
    ledger = checked.get("ledger", {})
    lines.append(
        f"  ledger: {len(ledger.get('invariants', []))} invariants, "
        f"{sum(ledger.get('broken', {}).values())} breaks"
    )
    positions = checked.get("positions", {})
    lines.append(
        f"  positions: {positions.get('positions', 0)} positions against "
        f"{positions.get('fills', 0)} fills"
    )
    sequences = checked.get("sequences", {}).get("broken", {})
    lines.append(
        "  sequences: trade numbers, book and order events, order commands: "
        + ("no gap" if not any(sequences.values()) else f"{sequences}")
    )
    topic = checked.get("trades_topic", {})
    if "trades_in_database" in topic:
        lines.append(
            f"  trades topic {topic['topic']}: {topic['trades_in_database']} trades in "
            f"PostgreSQL ({topic['in_flight']} in flight), {topic['records_on_topic']} records"
        )
    for note in topic.get("history_not_on_topic", []):
        lines.append(f"    history not on the topic: {note}")
    if "trades_not_on_topic_as_history" in topic:
        lines.append(
            f"    {topic['trades_not_on_topic_as_history']} trades not on the topic for that "
            "reason (not breaks)"
        )
    books = checked.get("books", {})
    if "asked" in books:
        lines.append(f"  books: {books['answered']} of {books['asked']} compared")
    for name in CHECKS:
        reason = checked.get(name, {}).get("not_checked")
        if reason:
            lines.append(f"  NOT CHECKED {name}: {reason}")
    fresh = {(row.kind, row.subject) for row in new}
    if breaks.found:
        lines.append(f"Breaks found: {breaks.count()} ({len(fresh)} new)")
        for key, found in sorted(breaks.found.items()):
            mark = "new " if key in fresh else "open"
            lines.append(f"  [{mark}] {found.kind}: {found.subject}")
            lines += [f"         {line}" for line in found.detail.splitlines()]
        for kind, count in breaks.left_out.items():
            lines.append(f"  … and {count} more {kind} breaks not stored")
    else:
        lines.append("No breaks found.")
    still_open = checked.get("breaks", {}).get("open", 0)
    if still_open > breaks.count():
        lines.append(
            f"{still_open - breaks.count()} break(s) found by earlier runs are still open "
            "(resolve them with a note in the admin)."
        )
    return "\n".join(lines)
