"""Every SQL statement of the trading app, in one place; the modules that run them bind values.

Table names come from the models' metadata and status or kind values from the models' enums,
so a renamed table or value changes here with the model. Statements run through
`tredye.db.prepared_cursor` (server-side binding, prepared once per connection), except the
relay's lane locks and LISTEN, which need a session of their own that outlives Django's
connection handling (`trading.outbox.Lanes`).

- placement (`trading.placement`): the read and the one-statement write of `order_place`, and
  the reference price rule (`REFERENCE`), written once;
- the matcher's batch (`trading.matching.store`, `.matcher`): the one statement a batch writes;
- the outbox relay (`trading.outbox`): unsent rows, marking them sent, its cursors, lane locks;
- trading's invariants (`trading.checks`), run by `ledger_check`.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from django.db import connection
from django.db.models import DecimalField, Model

from accounts.models import Account, Asset, Balance, Bucket, EntryKind, JournalEntry, Posting
from trading import rules
from trading.models import (
    BookState,
    Instrument,
    MatcherCheckpoint,
    Order,
    Outbox,
    Position,
    RelayCursor,
    StreamSequence,
    Trade,
)
from tredye.db import compact, select_columns


def _table(model: type[Model]) -> str:
    return model._meta.db_table


_OUTBOX_TABLE = _table(Outbox)


# --- placement ----------------------------------------------------------------------------

# The reference price the band is centred on: the one the reference feed set, else the last
# trade (`i` an instrument row, `bs` its book state). The one place this rule is written.
REFERENCE = "COALESCE(i.reference_price, bs.last_price)"

PLACEMENT_READ = f"""
SELECT a.kind, a.status,
       i.id, i.name, i.status, i.tick_size, i.lot_size, i.min_quantity, i.max_quantity,
       i.price_band_pct, i.maker_fee_rate, i.taker_fee_rate, i.rules_version,
       b.id, b.code, b.precision, q.id, q.code, q.precision,
       {REFERENCE},
       (SELECT o.id FROM {_table(Order)} o
         WHERE o.account_id = a.id AND o.client_order_id = %(client_order_id)s)
  FROM {_table(Account)} a
  JOIN {_table(Instrument)} i ON i.symbol = %(symbol)s
  JOIN {_table(Asset)} b ON b.id = i.base_id
  JOIN {_table(Asset)} q ON q.id = i.quote_id
  LEFT JOIN {_table(BookState)} bs ON bs.instrument_id = i.id
 WHERE a.id = %(account_id)s
"""  # noqa: S608 - table names from model metadata; values are bound

# The order's columns, each cast to its column type (parameters of INSERT … SELECT are not
# typed by the target column).
ORDER_INSERT_FIELDS = [f for f in Order._meta.concrete_fields if f.column != "id"]
_ORDER_VALUES = ", ".join(
    f"%({f.column})s::{f.db_type(connection)}" for f in ORDER_INSERT_FIELDS
)  # built at import, the same for every call

# What a place command (`order.place`) records beside its `order_id`: the terms the order was
# placed with, and its hold (`hold`, `hold_asset_id`), so that `manage.py replay`
# (trading/replay.py) rebuilds the order from the command alone. Decimals as text (a JSON
# number would be a float to most readers), as in every command.
PLACE_TERMS = (
    "account_id",
    "client_order_id",
    "side",
    "type",
    "time_in_force",
    "post_only",
    "quantity",
    "price",
    "stop_price",
    "protection_price",
    "maker_fee_rate",
    "taker_fee_rate",
)
_PLACE_TERMS = ",".join(  # (compact: the statement stays under psycopg's cache limit)
    f"{name}::text {name}" if isinstance(Order._meta.get_field(name), DecimalField) else name
    for name in PLACE_TERMS
)

PLACEMENT_WRITE = compact(
    f"""
WITH account AS (
    -- Locked first (then the balance row: the global lock order). A freeze that commits while
    -- this waits is seen: READ COMMITTED re-checks the locked row's new version.
    SELECT id FROM {_table(Account)}
     WHERE id = %(account_id)s::bigint
       AND kind = '{Account.Kind.CUSTOMER.value}' AND status <> '{Account.Status.FROZEN.value}'
       FOR NO KEY UPDATE
), instrument AS (
    -- Still open under the rules the order was validated against (one number: PostgreSQL
    -- bumps it on any rule change), and the reference price of the moment one around which
    -- the price is inside the band (`trading.rules.references_admitting`), or none.
    SELECT i.id FROM {_table(Instrument)} i
      LEFT JOIN {_table(BookState)} bs ON bs.instrument_id = i.id
     WHERE i.id = %(instrument_id)s::bigint AND i.status = '{Instrument.Status.OPEN.value}'
       AND i.rules_version = %(rules_version)s::bigint
       AND ({REFERENCE} IS NULL OR {REFERENCE}
            BETWEEN %(reference_low)s::numeric AND %(reference_high)s::numeric)
), hold AS (
    UPDATE {_table(Balance)}
       SET available = available - %(hold)s::numeric,
           held = held + %(hold)s::numeric,
           updated_at = %(created_at)s::timestamptz
     WHERE account_id = %(account_id)s::bigint AND asset_id = %(asset_id)s::bigint
       AND available >= %(hold)s::numeric
       AND EXISTS (SELECT 1 FROM account) AND EXISTS (SELECT 1 FROM instrument)
       -- Checked again here: the read ran before this statement. A call with the same id
       -- that commits after this statement's snapshot is caught by the unique index.
       AND NOT EXISTS (
           SELECT 1 FROM {_table(Order)}
            WHERE account_id = %(account_id)s::bigint
              AND client_order_id = %(client_order_id)s::text)
 RETURNING id
), new_order AS (
    INSERT INTO {_table(Order)} ({", ".join(f.column for f in ORDER_INSERT_FIELDS)})
    SELECT {_ORDER_VALUES} FROM hold
 RETURNING id, {_PLACE_TERMS}
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
           -- The order's terms as placed and its hold (`PLACE_TERMS`): replay rebuilds it.
           to_jsonb(new_order)-'id'||jsonb_build_object('order_id', new_order.id,
               'hold', %(hold)s::numeric::text, 'hold_asset_id', %(asset_id)s::bigint),
           %(created_at)s::timestamptz
      FROM new_order
)
-- The order's id; or, when nothing was written, what each guard saw (read only then): the
-- client order id free, the account may trade, the instrument's status and rules version,
-- the reference price (as text: a JSON number would be a float).
SELECT n.id, CASE WHEN n.id IS NULL THEN (
    SELECT json_build_array(
        NOT EXISTS (SELECT 1 FROM {_table(Order)} o WHERE o.account_id = %(account_id)s::bigint
                       AND o.client_order_id = %(client_order_id)s::text),
        EXISTS (SELECT 1 FROM account), i.status, i.rules_version, ({REFERENCE})::text)
      FROM {_table(Instrument)} i LEFT JOIN {_table(BookState)} bs ON bs.instrument_id = i.id
     WHERE i.id = %(instrument_id)s::bigint) END
  FROM (SELECT (SELECT id FROM new_order) AS id) AS n
"""  # noqa: S608 - table names from model metadata; values are bound
)


def _reference_grid() -> tuple[Decimal, Decimal]:
    """The step and the largest value of a reference price: the columns `REFERENCE` reads."""
    fields = [
        Instrument._meta.get_field("reference_price"),
        BookState._meta.get_field("last_price"),
    ]
    places = max(f.decimal_places for f in fields)
    quantum = Decimal(1).scaleb(-places)
    return quantum, Decimal(10) ** min(f.max_digits - places for f in fields) - quantum


REFERENCE_QUANTUM, REFERENCE_TOP = _reference_grid()

REFERENCE_OF = f"""
SELECT {REFERENCE} FROM {_table(Instrument)} i
  LEFT JOIN {_table(BookState)} bs ON bs.instrument_id = i.id
 WHERE i.id = %s
"""  # noqa: S608 - table names from model metadata; values are bound
ORDER_BY_CLIENT_ORDER_ID = (
    f"SELECT id FROM {_table(Order)} WHERE account_id = %s AND client_order_id = %s"  # noqa: S608
)
AVAILABLE = f"SELECT available FROM {_table(Balance)} WHERE account_id = %s AND asset_id = %s"  # noqa: S608


# --- the matcher's batch ------------------------------------------------------------------

ORDER_UPDATE_COLUMNS = (
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
TRADE_COLUMNS = (
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
    ("settlement_date", "date"),
)
POSITION_COLUMNS = (
    ("account_id", "bigint"),
    ("instrument_id", "bigint"),
    ("quantity", "numeric"),
    ("average_cost", "numeric"),
    ("realized_pnl", "numeric"),
    ("updated_at", "timestamptz"),
)
STATE_COLUMNS = (
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


SEQUENCE_COLUMNS = (("topic", "text"), ("key", "text"), ("seq", "bigint"))
CHECKPOINT_COLUMNS = (("partition", "integer"), ("offset", "bigint"))
APPLIED = (
    f"SELECT id FROM {_OUTBOX_TABLE} "  # noqa: S608 - constant
    "WHERE id = ANY(%(ids)b::bigint[]) AND applied_at IS NOT NULL"
)
# One home for the checkpoint's upsert (the batch's statement and a dead-letter's own).
# The offset is set, not raised: on a topic that came back empty offsets start again.
CHECKPOINT_UPSERT = f"""
INSERT INTO {_table(MatcherCheckpoint)} (topic, partition, "offset", topic_id, updated_at)
SELECT %(topic)s::text, partition, "offset", %(topic_id)s::text, %(now)s::timestamptz
  FROM {_unnest("c", CHECKPOINT_COLUMNS)}
    ON CONFLICT (topic, partition) DO UPDATE
       SET "offset" = EXCLUDED."offset", topic_id = EXCLUDED.topic_id,
           updated_at = EXCLUDED.updated_at
"""  # noqa: S608 - table and column names are constants; values are bound
# The batch's commands, in the order it applied them: `applied_rank` is each one's place in the
# batch (its first, if it came twice), so (applied_at, applied_rank) orders every applied command
# as the matcher applied it (`manage.py replay` follows that order).
MARK_APPLIED = f"""
UPDATE {_OUTBOX_TABLE} AS o SET applied_at = %(now)s::timestamptz, applied_rank = a.rank
  FROM (SELECT id, min(n) AS rank FROM unnest(%(applied)b::bigint[]) WITH ORDINALITY AS u(id, n)
         GROUP BY id) AS a
 WHERE o.id = a.id AND o.applied_at IS NULL
"""  # noqa: S608 - table name from model metadata; values are bound
EVENT_COLUMNS = (
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
    + ", ".join(f"%(e_{name})b::{kind}[]" for name, kind in EVENT_COLUMNS)
    + f") WITH ORDINALITY AS v({_names(EVENT_COLUMNS)}, n)"
)

# Everything a batch writes but the ledger, in ONE statement of constant text (prepared once per
# connection): each table's rows travel as arrays, one per column, and an empty batch of a table
# writes nothing. `held_for_replace` belongs to order_replace too, so it only moves by a
# difference.
BATCH_WRITE = compact(
    f"""
WITH orders AS (
    UPDATE {_table(Order)} AS o
       SET {", ".join(f"{name} = v.{name}" for name, _ in ORDER_UPDATE_COLUMNS)},
           held_for_replace = o.held_for_replace - v.moved
      FROM {_unnest("o", (("id", "bigint"), *ORDER_UPDATE_COLUMNS, ("moved", "numeric")))}
     WHERE o.id = v.id
), trades AS (
    INSERT INTO {_table(Trade)} ({_names(TRADE_COLUMNS)})
    SELECT * FROM {_unnest("t", TRADE_COLUMNS)}
), positions AS (
    INSERT INTO {_table(Position)} ({_names(POSITION_COLUMNS)})
    SELECT * FROM {_unnest("p", POSITION_COLUMNS)}
    ON CONFLICT (account_id, instrument_id) DO UPDATE
       SET quantity = EXCLUDED.quantity, average_cost = EXCLUDED.average_cost,
           realized_pnl = EXCLUDED.realized_pnl, updated_at = EXCLUDED.updated_at
), states AS (
    UPDATE {_table(BookState)} AS s
       SET trade_seq = v.trade_seq, last_price = v.last_price, book_seq = v.book_seq,
           updated_at = v.updated_at
      FROM {_unnest("s", STATE_COLUMNS)}
     WHERE s.instrument_id = v.instrument_id
), events AS (
    INSERT INTO {_table(Outbox)} (topic, key, type, seq, ts, data, created_at)
    SELECT topic, key, type, seq, ts, data::jsonb, %(now)s::timestamptz
      FROM {_EVENTS_UNNEST}
     ORDER BY v.n
), sequences AS (
    INSERT INTO {_table(StreamSequence)} (topic, key, seq)
    SELECT * FROM {_unnest("q", SEQUENCE_COLUMNS)}
    ON CONFLICT (topic, key) DO UPDATE SET seq = EXCLUDED.seq
), applied AS (
    {MARK_APPLIED}
)
{CHECKPOINT_UPSERT}
"""  # noqa: S608 - table and column names are constants; values are bound
)


# --- the outbox relay ---------------------------------------------------------------------

# Notified when a command is committed (the trigger of migration 0006).
NOTIFY_CHANNEL = "trading_outbox_orders"
LANE_LISTEN = f"LISTEN {NOTIFY_CHANNEL}"
# Session advisory locks: (namespace, key) of a topic's lane; the try form answers 'true' or
# 'false' as text.
LANE_LOCK = "SELECT pg_advisory_lock(%s, %s)::text"
LANE_TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)::text"
LANE_UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
RELAY_UNSENT = (
    f"SELECT id, topic, key, type, seq, ts, data::text FROM {_OUTBOX_TABLE} "  # noqa: S608 - constant
    "WHERE topic = ANY(%s) AND sent_at IS NULL ORDER BY id LIMIT %s"
)
RELAY_MARK_SENT = f"UPDATE {_OUTBOX_TABLE} SET sent_at = %s WHERE id = ANY(%s)"  # noqa: S608
# Advance each (physical topic, partition) cursor, never backwards, with its topic's id.
RELAY_CURSORS_ADVANCE = f"""
INSERT INTO {_table(RelayCursor)} AS c (topic, partition, "offset", topic_id, updated_at)
SELECT t, p, o, i, %s
  FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::text[]) AS v(t, p, o, i)
    ON CONFLICT (topic, partition) DO UPDATE
       SET "offset" = GREATEST(c."offset", EXCLUDED."offset"),
           topic_id = EXCLUDED.topic_id,
           updated_at = EXCLUDED.updated_at
"""  # noqa: S608 - table name from model metadata; values are bound


# --- trading's invariants (trading.checks) -------------------------------------------------

_OPEN = ", ".join(f"'{status.value}'" for status in Order.OPEN_STATUSES)

# The asset an order holds, as SQL: `rules.hold_asset` itself, applied to an instrument whose
# base and quote are the columns of `i` (so the rule is not written a second time here).
_HOLD_ASSET_ID = (
    "CASE o.side "
    + " ".join(
        f"WHEN '{side.value}' THEN "
        + rules.hold_asset(SimpleNamespace(base="i.base_id", quote="i.quote_id"), side.value)
        for side in Order.Side
    )
    + " END"
)

HELD_EQUALS_OPEN_ORDERS = f"""
    WITH needed AS (
        -- Every (account, asset) an order ever held; a hold made outside trading (the
        -- ledger's own `hold` service) on a pair no order uses is not checked here.
        SELECT o.account_id, {_HOLD_ASSET_ID} AS asset_id,
               SUM(CASE WHEN o.status IN ({_OPEN}) THEN o.held ELSE 0 END
                   + o.held_for_replace) AS held
          FROM {_table(Order)} o JOIN {_table(Instrument)} i ON i.id = o.instrument_id
         GROUP BY 1, 2
    )
    SELECT b.account_id, a.code, a.precision, b.held, n.held
      FROM (SELECT account_id, asset_id, held FROM {_table(Balance)}
             WHERE account_kind = '{Account.Kind.CUSTOMER.value}') b
      JOIN needed n ON n.account_id = b.account_id AND n.asset_id = b.asset_id
      JOIN {_table(Asset)} a ON a.id = b.asset_id
     WHERE b.held <> n.held
     ORDER BY 1, 2
"""  # noqa: S608 - table names from model metadata, values from the models' enums

POSITION_EQUALS_FILLS = f"""
    WITH fills AS (
        SELECT account_id, instrument_id, SUM(quantity) AS quantity FROM (
            SELECT buyer_id AS account_id, instrument_id, quantity FROM {_table(Trade)}
            UNION ALL
            SELECT seller_id, instrument_id, -quantity FROM {_table(Trade)}
        ) f GROUP BY 1, 2
    )
    SELECT COALESCE(p.account_id, f.account_id), i.symbol,
           COALESCE(p.quantity, 0), COALESCE(f.quantity, 0)
      FROM {_table(Position)} p
      FULL OUTER JOIN fills f
        ON f.account_id = p.account_id AND f.instrument_id = p.instrument_id
      JOIN {_table(Instrument)} i ON i.id = COALESCE(p.instrument_id, f.instrument_id)
     WHERE COALESCE(p.quantity, 0) <> COALESCE(f.quantity, 0)
     ORDER BY 1, 2
"""  # noqa: S608 - table names from model metadata

ORDER_FILLED_EQUALS_TRADES = f"""
    WITH fills AS (
        SELECT order_id, SUM(quantity) AS quantity FROM (
            SELECT maker_order_id AS order_id, quantity FROM {_table(Trade)}
            UNION ALL
            SELECT taker_order_id, quantity FROM {_table(Trade)}
        ) f GROUP BY 1
    )
    SELECT o.id, o.filled_quantity, COALESCE(f.quantity, 0)
      FROM {_table(Order)} o LEFT JOIN fills f ON f.order_id = o.id
     WHERE o.filled_quantity <> COALESCE(f.quantity, 0)
     ORDER BY 1
"""  # noqa: S608 - table names from model metadata


# ---------------------------------------------------------------------------------------------
# The back office (trading/admin/)
# ---------------------------------------------------------------------------------------------

# A table's row count as the planner estimates it: rows per page at the last ANALYZE times the
# pages the table has now (so a table that grew since is not under-counted). NULL before the
# table was first analysed. Never a COUNT: that reads the whole table.
TABLE_ROWS_ESTIMATE = """
    SELECT CASE WHEN c.relpages > 0 AND c.reltuples >= 0
                THEN (c.reltuples / c.relpages
                      * (pg_relation_size(c.oid) / current_setting('block_size')::bigint))::bigint
           END
      FROM pg_class c
     WHERE c.oid = %(table)s::regclass
"""


# ---------------------------------------------------------------------------------------------
# Settlement (trading.settlement): each trade side's amount is written once, in _SIDES.
# ---------------------------------------------------------------------------------------------


def _unsettled_sides(where: str) -> str:
    """Every unsettled trade side with something to move: (account_id, trade_id, side,
    asset_id, amount, settlement_date). The buyer receives the base quantity, the seller the
    quote amount less its fee; a side that moves nothing (a seller whose quote amount is zero,
    or all fee) is never settled (decision 0015). `where` filters both branches: columns of
    `t` (the trade), `{account}` standing for the side's account."""
    return f"""
    SELECT t.buyer_id AS account_id, t.id AS trade_id, 'buy' AS side, i.base_id AS asset_id,
           t.quantity AS amount, t.settlement_date
      FROM {_table(Trade)} t JOIN {_table(Instrument)} i ON i.id = t.instrument_id
     WHERE t.buyer_settlement_id IS NULL AND {where.format(account="t.buyer_id")}
    UNION ALL
    SELECT t.seller_id, t.id, 'sell', i.quote_id, t.quote_amount - t.seller_fee,
           t.settlement_date
      FROM {_table(Trade)} t JOIN {_table(Instrument)} i ON i.id = t.instrument_id
     WHERE t.seller_settlement_id IS NULL AND t.quote_amount > t.seller_fee
       AND {where.format(account="t.seller_id")}
    """  # noqa: S608 - table names from model metadata


# The accounts with sides due on or before a date (the partial indexes trade_*_unsettled).
SETTLEMENT_ACCOUNTS_DUE = f"""
    SELECT DISTINCT account_id
      FROM ({_unsettled_sides("t.settlement_date <= %(date)s")}) sides
     ORDER BY 1
"""  # noqa: S608

# The sides due of a batch of accounts, read before their locks (re-read after, by id).
SETTLEMENT_SIDES_DUE = f"""
    SELECT account_id, trade_id, side, asset_id, amount
      FROM ({_unsettled_sides("t.settlement_date <= %(date)s AND {account} = ANY(%(accounts)s)")})
           sides
     ORDER BY account_id, trade_id
"""  # noqa: S608

# Of one account's sides read before its lock, those still unsettled (read under the lock).
SETTLEMENT_SIDES_LOCKED = f"""
    SELECT trade_id, side, asset_id, amount
      FROM ({_unsettled_sides("t.id = ANY(%(trade_ids)s) AND {account} = %(account)s")}) sides
     ORDER BY trade_id
"""  # noqa: S608

# Mark sides settled, each by its settlement; only an unsettled side is marked (the caller
# checks that every side was, so a side is settled exactly once).
SETTLEMENT_MARK_BUYER = f"""
    UPDATE {_table(Trade)} t SET buyer_settlement_id = v.settlement_id
      FROM unnest(%(trade_ids)s::bigint[], %(settlement_ids)s::bigint[]) v(id, settlement_id)
     WHERE t.id = v.id AND t.buyer_settlement_id IS NULL
"""  # noqa: S608
SETTLEMENT_MARK_SELLER = f"""
    UPDATE {_table(Trade)} t SET seller_settlement_id = v.settlement_id
      FROM unnest(%(trade_ids)s::bigint[], %(settlement_ids)s::bigint[]) v(id, settlement_id)
     WHERE t.id = v.id AND t.seller_settlement_id IS NULL
"""  # noqa: S608

# One account's amounts pending settlement, per asset and the date they settle on.
SETTLEMENT_PENDING_BY_DATE = f"""
    SELECT asset_id, settlement_date, SUM(amount), COUNT(*)
      FROM ({_unsettled_sides("{account} = %(account)s")}) sides
     GROUP BY 1, 2
     ORDER BY 1, 2
"""  # noqa: S608


# --- reconciliation (trading.reconcile; the matcher's answer to `book.digest`) -------------

# The matcher's answer to `book.digest` commands, at the commit of their batch (after its
# writes): for each book asked (arrays, one element per book), the digest of its engine's live
# orders (`memory`, `orders`: computed by `trading.matching.matcher.memory_digest`) and, here,
# the digest of its open order rows in the same canonical form: one line per order in id
# order, `id side price open R|S` (price in ticks: the protection price of a market or stop
# order, as `Book.engine_order` takes it; open quantity in lots; S a stop not yet triggered),
# joined by newlines, SHA-256 in hex. A price or quantity off the book's grid keeps its
# fraction, so it cannot equal the engine's integer.
_BOOK_STATUSES = f"'{Order.Status.NEW.value}', '{Order.Status.PARTIALLY_FILLED.value}'"
_RUNS_AT_PROTECTION = f"'{Order.Type.MARKET.value}', '{Order.Type.STOP.value}'"
BOOK_DIGEST_WRITE = f"""
UPDATE {_table(BookState)} AS s
   SET digest_request = GREATEST(s.digest_request, v.request), memory_digest = v.memory,
       rows_digest = r.digest, digest_orders = v.orders, digest_at = %(now)s::timestamptz
  FROM unnest(%(instrument)s::bigint[], %(tick)s::numeric[], %(lot)s::numeric[],
              %(request)s::bigint[], %(memory)s::text[], %(orders)s::int[])
       AS v(instrument_id, tick, lot, request, memory, orders),
       LATERAL (
           SELECT encode(sha256(convert_to(COALESCE(string_agg(
                      o.id || ' ' || o.side || ' '
                      || trim_scale(CASE WHEN o.type IN ({_RUNS_AT_PROTECTION})
                                         THEN o.protection_price ELSE o.price END / v.tick)
                      || ' ' || trim_scale((o.quantity - o.filled_quantity) / v.lot) || ' '
                      || CASE WHEN o.stop_price IS NOT NULL AND o.triggered_at IS NULL
                              THEN 'S' ELSE 'R' END,
                      E'\\n' ORDER BY o.id), ''), 'UTF8')), 'hex') AS digest
             FROM {_table(Order)} o
            WHERE o.instrument_id = v.instrument_id AND o.status IN ({_BOOK_STATUSES})
       ) AS r
 WHERE s.instrument_id = v.instrument_id
"""  # noqa: S608 - table names from model metadata, values from the models' enums; bound

# Every trade number of each instrument, by symbol (the database's side of the `trades` topic).
RECONCILE_TRADES = f"""
SELECT i.symbol, array_agg(t.seq)
  FROM {_table(Trade)} t JOIN {_table(Instrument)} i ON i.id = t.instrument_id
 GROUP BY i.symbol
"""  # noqa: S608 - table names from model metadata

# Trades whose outbox row the relay has not sent yet (in flight, not missing): symbol, number.
RECONCILE_TRADES_UNSENT = (
    f"SELECT key, seq FROM {_OUTBOX_TABLE} "  # noqa: S608 - constant
    "WHERE topic = %(topic)s AND sent_at IS NULL"
)

# Which of these (symbol, number) pairs are trades now (those on the topic but not in the
# snapshot, made after it).
RECONCILE_TRADES_FOUND = f"""
SELECT v.symbol, v.seq
  FROM unnest(%(symbols)s::text[], %(seqs)s::bigint[]) AS v(symbol, seq)
  JOIN {_table(Instrument)} i ON i.symbol = v.symbol
  JOIN {_table(Trade)} t ON t.instrument_id = i.id AND t.seq = v.seq
"""  # noqa: S608 - table names from model metadata; values are bound

# Every fill of every account in trade order (per instrument), for the positions' fold.
RECONCILE_FILLS = f"""
SELECT instrument_id, buyer_id, seller_id, quantity, price
  FROM {_table(Trade)} ORDER BY instrument_id, seq
"""  # noqa: S608 - table name from model metadata

RECONCILE_POSITIONS = f"""
SELECT p.account_id, p.instrument_id, i.symbol, p.quantity, p.average_cost, p.realized_pnl
  FROM {_table(Position)} p JOIN {_table(Instrument)} i ON i.id = p.instrument_id
"""  # noqa: S608 - table names from model metadata

# Rows: symbol, first and last number of a range, and what is wrong with it: `missing` (no
# trade has these numbers, at or below the book's trade counter) or `beyond` (a trade numbered
# past the counter, which the matcher would number again; one row each).
TRADE_SEQUENCE_HOLES = f"""
WITH numbered AS (
    SELECT instrument_id, seq,
           lag(seq, 1, 0::bigint) OVER (PARTITION BY instrument_id ORDER BY seq) AS prev
      FROM {_table(Trade)}
), top AS (
    SELECT instrument_id, max(seq) AS seq FROM {_table(Trade)} GROUP BY 1
), holes AS (
    SELECT n.instrument_id, n.prev + 1 AS first, LEAST(n.seq - 1, s.trade_seq) AS last,
           'missing' AS what
      FROM numbered n JOIN {_table(BookState)} s ON s.instrument_id = n.instrument_id
     WHERE n.seq > n.prev + 1 AND n.prev < s.trade_seq
    UNION ALL
    SELECT s.instrument_id, COALESCE(t.seq, 0) + 1, s.trade_seq, 'missing'
      FROM {_table(BookState)} s LEFT JOIN top t ON t.instrument_id = s.instrument_id
     WHERE s.trade_seq > COALESCE(t.seq, 0)
    UNION ALL
    SELECT n.instrument_id, n.seq, n.seq, 'beyond'
      FROM numbered n LEFT JOIN {_table(BookState)} s ON s.instrument_id = n.instrument_id
     WHERE n.seq > COALESCE(s.trade_seq, 0)
)
SELECT i.symbol, h.first, h.last, h.what
  FROM holes h JOIN {_table(Instrument)} i ON i.id = h.instrument_id
 ORDER BY 1, 2
"""  # noqa: S608 - table names from model metadata

# The matcher's numbered event streams (outbox rows of `topics`, e.g. book and account
# events, against StreamSequence). Rows: topic, key, first, last, what: `missing` (at or below
# the stream's last number), `repeated` (a number used twice) or `beyond` (an event numbered
# past the stream's last number; one row each).
STREAM_SEQUENCE_HOLES = f"""
WITH numbered AS (
    SELECT o.topic, o.key, o.seq, COALESCE(s.seq, 0) AS last,
           lag(o.seq, 1, 0::bigint) OVER (PARTITION BY o.topic, o.key ORDER BY o.seq) AS prev
      FROM {_OUTBOX_TABLE} o
      LEFT JOIN {_table(StreamSequence)} s ON s.topic = o.topic AND s.key = o.key
     WHERE o.topic = ANY(%(topics)s::text[])
), top AS (
    SELECT topic, key, max(seq) AS seq FROM numbered GROUP BY 1, 2
)
SELECT topic, key, prev + 1, LEAST(seq - 1, last), 'missing' FROM numbered
 WHERE seq > prev + 1 AND prev < last
UNION ALL
SELECT topic, key, seq, seq, 'repeated' FROM numbered WHERE seq = prev
UNION ALL
SELECT s.topic, s.key, COALESCE(t.seq, 0) + 1, s.seq, 'missing'
  FROM {_table(StreamSequence)} s LEFT JOIN top t ON t.topic = s.topic AND t.key = s.key
 WHERE s.topic = ANY(%(topics)s::text[]) AND s.seq > COALESCE(t.seq, 0)
UNION ALL
SELECT topic, key, seq, seq, 'beyond' FROM numbered WHERE seq > last
 ORDER BY 1, 2, 3
"""  # noqa: S608 - table names from model metadata; values are bound

# Each order's cancel and replace commands (`types`, on `topic`) are numbered 1, 2, ... up to
# its `command_seq`, each once, and it applied none past that. Rows: order id, symbol,
# command_seq, applied_seq, commands found, distinct numbers, highest number.
ORDER_COMMAND_GAPS = f"""
WITH commands AS (
    SELECT (data->>'order_id')::bigint AS order_id, min(key) AS symbol, count(*) AS found,
           count(DISTINCT seq) AS numbers, max(seq) AS top
      FROM {_OUTBOX_TABLE}
     WHERE topic = %(topic)s AND type = ANY(%(types)s::text[])
     GROUP BY 1
), numbered AS (
    SELECT o.id, o.instrument_id, o.command_seq, o.applied_seq FROM {_table(Order)} o
     WHERE o.command_seq > 0 OR o.applied_seq > 0
)
SELECT COALESCE(o.id, c.order_id), COALESCE(i.symbol, c.symbol), COALESCE(o.command_seq, 0),
       COALESCE(o.applied_seq, 0), COALESCE(c.found, 0), COALESCE(c.numbers, 0),
       COALESCE(c.top, 0)
  FROM numbered o
  FULL OUTER JOIN commands c ON c.order_id = o.id
  LEFT JOIN {_table(Instrument)} i ON i.id = o.instrument_id
 WHERE COALESCE(c.found, 0) <> COALESCE(o.command_seq, 0)
    OR COALESCE(c.numbers, 0) <> COALESCE(c.found, 0)
    OR COALESCE(c.top, 0) <> COALESCE(o.command_seq, 0)
    OR COALESCE(o.applied_seq, 0) > COALESCE(o.command_seq, 0)
 ORDER BY 1
"""  # noqa: S608 - table names from model metadata; values are bound

# One run stores its breaks at a time (a transaction-scoped advisory lock: namespace, key).
RECONCILE_STORE_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"

# Reconciliation and replay read everything in one snapshot and write nothing (the first
# statement of their transaction).
READ_ONLY_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


# --- replay (trading.replay) ------------------------------------------------------------------
