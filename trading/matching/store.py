"""The batch store: everything one batch writes but the ledger, in ONE SQL statement of
constant text (prepared once per connection), and the rows it takes. Table names come from the
models' metadata."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.services import EntrySpec
from trading import sql
from trading.models import (
    BookState,
    Order,
    Position,
)
from trading.units import ZERO
from tredye import kafka
from tredye.db import compact, prepared_cursor


@dataclass(slots=True)
class TradeFill:
    """A trade row as `batch_write` inserts it (the columns of `sql.TRADE_COLUMNS`); a model
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
    settlement_date: Any


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
    # Books whose digest a `book.digest` command asked for: symbol -> the highest outbox id of
    # those commands (0 for a record without one). Answered at commit (`Matcher._commit`).
    digests: dict[str, int] = field(default_factory=dict)


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
    names = [name for name, _ in sql.ORDER_UPDATE_COLUMNS]
    params: dict[str, Any] = {
        "topic": topic,
        "now": now,
        "topic_id": topic_id,
        "applied": applied or [],
    }
    params |= _columns(
        "o",
        (("id", "bigint"), *sql.ORDER_UPDATE_COLUMNS, ("moved", "numeric")),
        [
            (order.pk, *(getattr(order, name) for name in names), replace_holds.get(order.pk, ZERO))
            for order in orders
        ],
    )
    for prefix, columns, objects in (
        ("t", sql.TRADE_COLUMNS, trades),
        ("p", sql.POSITION_COLUMNS, positions),
        ("s", sql.STATE_COLUMNS, states),
    ):
        params |= _columns(
            prefix,
            columns,
            [tuple(getattr(row, name) for name, _ in columns) for row in objects],
        )
    params |= _columns(
        "e",
        sql.EVENT_COLUMNS,
        [(row.topic, row.key, row.type, row.seq, row.ts, json.dumps(row.data)) for row in events],
    )
    sequences = {(row.topic, row.key): row.seq for row in events if row.topic != kafka.TRADES}
    params |= _columns(
        "q", sql.SEQUENCE_COLUMNS, [(t, k, seq) for (t, k), seq in sequences.items()]
    )
    params |= _columns("c", sql.CHECKPOINT_COLUMNS, sorted(checkpoints.items()))
    prepared_cursor().execute(sql.BATCH_WRITE, params, prepare=True)


def checkpoint_write(
    *,
    topic: str,
    topic_id: str,
    now: Any,
    applied: list[int],
    checkpoints: dict[int, int],
) -> None:
    """Record dead-lettered commands as done: their checkpoints and outbox ids, nothing else."""
    params: dict[str, Any] = {"topic": topic, "topic_id": topic_id, "now": now, "applied": applied}
    params |= _columns("c", sql.CHECKPOINT_COLUMNS, sorted(checkpoints.items()))
    with transaction.atomic():
        cursor = prepared_cursor()
        cursor.execute(compact(sql.CHECKPOINT_UPSERT), params)
        cursor.execute(sql.MARK_APPLIED, params)
