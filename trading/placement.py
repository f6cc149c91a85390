"""The SQL of order placement: two prepared statements instead of a dozen ORM queries.

`order_place` is the hot path of the venue (docs/decisions/0005-order-placement-sql.md). Inside
its durable transaction it runs:

1. `placement_read`: lock the account row (FOR NO KEY UPDATE, the same lock as
   `accounts_lock`) and read, in the same round trip, the account's kind and status, the
   instrument's rules and status, its assets' precision, the band's reference price and the id
   of an order that already uses the client order id.
2. `placement_write`: one statement whose CTEs move the hold from `available` to `held` on the
   balance row — only if enough is available — and, only then, insert the order, the hold's
   journal entry and its two postings, and the outbox row.

The hold is exactly the entry `ledger_post` would write (kind hold, reference "order N",
available → held of one asset), so PostgreSQL's ledger triggers (entries balance, postings
within the asset's precision, append-only) and `ledger_check` hold it to the same rules.
Statements are sent with server-side binding and prepared once per connection.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from django.db import connection, transaction

from accounts.models import Account, Asset, Balance, Bucket, EntryKind, JournalEntry, Posting
from marketdata.models import PriceModel
from trading.models import BookState, Instrument, Order, Outbox


def _table(model: type) -> str:
    return model._meta.db_table


_READ = f"""
SELECT a.kind, a.status,
       i.id, i.name, i.status, i.tick_size, i.lot_size, i.min_quantity, i.max_quantity,
       i.price_band_pct, i.maker_fee_rate, i.taker_fee_rate,
       b.id, b.code, b.precision, q.id, q.code, q.precision,
       COALESCE(pm.last_price, pm.initial_price, bs.last_price),
       (SELECT o.id FROM {_table(Order)} o
         WHERE o.account_id = a.id AND o.client_order_id = %(client_order_id)s)
  FROM {_table(Account)} a
  JOIN {_table(Instrument)} i ON i.symbol = %(symbol)s
  JOIN {_table(Asset)} b ON b.id = i.base_id
  JOIN {_table(Asset)} q ON q.id = i.quote_id
  LEFT JOIN {_table(PriceModel)} pm ON pm.instrument_id = i.id
  LEFT JOIN {_table(BookState)} bs ON bs.instrument_id = i.id
 WHERE a.id = %(account_id)s
   FOR NO KEY UPDATE OF a
"""  # noqa: S608 - table names from model metadata; values are bound

# The order's columns, each cast to its column type (parameters of INSERT … SELECT are not
# typed by the target column).
_ORDER_COLUMNS = [f for f in Order._meta.concrete_fields if f.column != "id"]
_ORDER_VALUES = ", ".join(
    f"%({f.column})s::{f.db_type(connection)}" for f in _ORDER_COLUMNS
)  # built at import, the same for every call

_WRITE = f"""
WITH hold AS (
    UPDATE {_table(Balance)}
       SET available = available - %(hold)s::numeric,
           held = held + %(hold)s::numeric,
           updated_at = %(created_at)s::timestamptz
     WHERE account_id = %(account_id)s::bigint AND asset_id = %(asset_id)s::bigint
       AND available >= %(hold)s::numeric
       -- Re-checked here: the read's subquery ran on a snapshot taken before the account lock
       -- was granted, so it misses an order a racing call with the same id just committed.
       AND NOT EXISTS (
           SELECT 1 FROM {_table(Order)}
            WHERE account_id = %(account_id)s::bigint
              AND client_order_id = %(client_order_id)s::text)
 RETURNING id
), new_order AS (
    INSERT INTO {_table(Order)} ({", ".join(f.column for f in _ORDER_COLUMNS)})
    SELECT {_ORDER_VALUES} FROM hold
 RETURNING id
), entry AS (
    INSERT INTO {_table(JournalEntry)} (kind, reference, memo, created_at)
    SELECT '{EntryKind.HOLD.value}', 'order ' || new_order.id, %(memo)s::text,
           %(created_at)s::timestamptz
      FROM new_order
 RETURNING id
), postings AS (
    INSERT INTO {_table(Posting)} (entry_id, account_id, asset_id, bucket, amount)
    SELECT entry.id, %(account_id)s::bigint, %(asset_id)s::bigint, leg.bucket, leg.amount
      FROM entry,
           (VALUES ('{Bucket.AVAILABLE.value}', -%(hold)s::numeric),
                   ('{Bucket.HELD.value}', %(hold)s::numeric)) AS leg (bucket, amount)
), outbox AS (
    INSERT INTO {_table(Outbox)} (topic, key, type, seq, ts, data, created_at)
    SELECT %(outbox_topic)s::text, %(symbol)s::text, %(outbox_type)s::text, 0, %(ts)s::bigint,
           jsonb_build_object('order_id', new_order.id), %(created_at)s::timestamptz
      FROM new_order
)
SELECT id FROM new_order
"""  # noqa: S608 - table names from model metadata; values are bound

_EXISTING = f"SELECT id FROM {_table(Order)} WHERE account_id = %s AND client_order_id = %s"  # noqa: S608
_AVAILABLE = f"SELECT available FROM {_table(Balance)} WHERE account_id = %s AND asset_id = %s"  # noqa: S608


@dataclass(slots=True)
class Placement:
    """What the locked read returned: the account's state and the instrument's rules."""

    account_kind: str
    account_status: str
    instrument: Instrument
    reference: Decimal | None
    existing_order_id: int | None


_ONLY_WHEN_ASKED = 2**31 - 1
# Connections known to plan prepared statements once (see `prepared_cursor`).
_GENERIC_PLANS: weakref.WeakSet = weakref.WeakSet()


def prepared_cursor() -> psycopg.Cursor:
    """A cursor on Django's connection that binds server-side and prepares what it is asked to
    (`execute(..., prepare=True)`); the connection plans a prepared statement once
    (`plan_cache_mode = force_generic_plan`).

    Without that PostgreSQL keeps re-planning these statements for each call (their custom
    plans cost less than the generic one, so it never switches): planning was ~40% of a
    trader's backend CPU. Django's own queries bind client-side and are never prepared, so the
    setting does not reach them. A SET is undone by a rollback, so the connection is only
    marked once the transaction that ran it commits.
    """
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns prepared statements off (prepare_threshold None), and psycopg then
        # ignores `prepare=True` too: every call was parsed and planned again. Only the calls
        # that ask (prepare=True) are prepared; Django's own cursors bind client-side and never
        # prepare.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    cursor = psycopg.Cursor(raw)
    if raw not in _GENERIC_PLANS:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        if connection.in_atomic_block:
            transaction.on_commit(lambda: _GENERIC_PLANS.add(raw))
        else:
            _GENERIC_PLANS.add(raw)
    return cursor


_cursor = prepared_cursor


def placement_read(*, account_id: int, symbol: str, client_order_id: str) -> Placement | None:
    """Lock the account and read what placing needs; None if the account or symbol is unknown."""
    with _cursor() as cursor:
        cursor.execute(
            _READ,
            {"account_id": account_id, "symbol": symbol, "client_order_id": client_order_id},
            prepare=True,
        )
        row = cursor.fetchone()
    if row is None:
        return None
    (kind, status, instrument_id, name, instrument_status, tick, lot, min_quantity) = row[:8]
    (max_quantity, band, maker_fee, taker_fee, base_id, base_code, base_precision) = row[8:15]
    (quote_id, quote_code, quote_precision, reference, existing) = row[15:]
    instrument = Instrument(
        id=instrument_id,
        symbol=symbol,
        name=name,
        status=instrument_status,
        tick_size=tick,
        lot_size=lot,
        min_quantity=min_quantity,
        max_quantity=max_quantity,
        price_band_pct=band,
        maker_fee_rate=maker_fee,
        taker_fee_rate=taker_fee,
        base=Asset(id=base_id, code=base_code, precision=base_precision),
        quote=Asset(id=quote_id, code=quote_code, precision=quote_precision),
    )
    return Placement(kind, status, instrument, reference, existing)


def placement_write(
    *,
    order: Order,
    asset_id: int,
    hold: Decimal,
    memo: str,
    topic: str,
    type: str,
    ts: int,  # noqa: A002
) -> int | None:
    """Hold the funds and insert the order, its hold entry and outbox row; return the order id.

    Returns None, having written nothing, when the balance has less than `hold` available or
    the account already has an order with this client order id.
    """
    params: dict[str, Any] = {f.column: getattr(order, f.attname) for f in _ORDER_COLUMNS}
    params |= {
        "hold": hold,
        "asset_id": asset_id,
        "memo": memo,
        "outbox_topic": topic,
        "symbol": order.instrument.symbol,
        "outbox_type": type,
        "ts": ts,
    }
    with _cursor() as cursor:
        cursor.execute(_WRITE, params, prepare=True)
        row = cursor.fetchone()
    return None if row is None else row[0]


def order_id_for(*, account_id: int, client_order_id: str) -> int | None:
    """The id of the account's order with this client order id, if any."""
    with _cursor() as cursor:
        cursor.execute(_EXISTING, (account_id, client_order_id))
        row = cursor.fetchone()
    return None if row is None else row[0]


def available_balance(*, account_id: int, asset_id: int) -> Decimal:
    """The account's available balance of an asset (for the refusal's message)."""
    with _cursor() as cursor:
        cursor.execute(_AVAILABLE, (account_id, asset_id))
        row = cursor.fetchone()
    return Decimal(0) if row is None else row[0]
