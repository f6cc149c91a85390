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
from django.db.models import Model

from accounts.services import EntrySpec
from trading.models import (
    BookState,
    MatcherCheckpoint,
    Order,
    Outbox,
    Position,
    StreamSequence,
)
from trading.models import Trade as TradeRow
from trading.units import ZERO
from tredye import kafka
from tredye.db import compact, prepared_cursor, select_columns


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


ORDERS_BY_ID = (
    f"SELECT {select_columns(Order)} FROM {Order._meta.db_table} "  # noqa: S608 - constants
    "WHERE id = ANY(%(ids)b::bigint[])"
)


def _unnest(prefix: str, columns: tuple[tuple[str, str], ...]) -> str:
    arrays = ", ".join(f"%({prefix}_{name})b::{kind}[]" for name, kind in columns)
    aliases = ", ".join(f'"{name}"' for name, _ in columns)
    return f"unnest({arrays}) AS v({aliases})"


def _names(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(name for name, _ in columns)


def _table(model: type[Model]) -> str:
    return model._meta.db_table


_SEQUENCE_COLUMNS = (("topic", "text"), ("key", "text"), ("seq", "bigint"))
_CHECKPOINT_COLUMNS = (("partition", "integer"), ("offset", "bigint"))
_OUTBOX_TABLE = Outbox._meta.db_table
APPLIED = (
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
    params |= _columns("c", _CHECKPOINT_COLUMNS, sorted(checkpoints.items()))
    with transaction.atomic():
        cursor = prepared_cursor()
        cursor.execute(compact(_CHECKPOINT_UPSERT), params)
        cursor.execute(_MARK_APPLIED, params)
