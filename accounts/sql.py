"""Every SQL statement of the accounts app, in one place; the modules that run them bind values.

Table names come from the models' metadata and kind or bucket values from the models' enums,
so a renamed table or value changes here with the model. The ledger's writes and the balance
locks run through `tredye.db.prepared_cursor` (server-side binding, prepared once per
connection); the idempotency lock and the invariants run on Django's own cursor.

- posting (`accounts.services.ledger_post`): the accounts' kinds, the one statement that inserts
  journal entries with their postings, and the one that moves the locked balance rows;
- row locks (`accounts.lock_objects`): the advisory lock of an idempotency key and the lock of
  balance rows in (account, asset) order;
- the ledger's invariants (`accounts.selectors`), run by `ledger_verify` (`ledger_check`); they
  return rows that `ledger_verify` formats by position.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Model

from accounts.models import Account, Asset, Balance, Bucket, JournalEntry, Posting
from tredye.db import select_columns


def _table(model: type[Model]) -> str:
    return model._meta.db_table


_BUCKETS = tuple(Bucket.values)


# --- posting (accounts.services) ----------------------------------------------------------

ACCOUNT_KINDS = f"SELECT id, kind FROM {_table(Account)} WHERE id = ANY(%(ids)b::bigint[])"  # noqa: S608

ENTRIES_INSERT = f"""
WITH entry AS (
    -- Ids drawn here, so each posting finds its entry by position (`n`).
    SELECT nextval(pg_get_serial_sequence('{_table(JournalEntry)}', 'id')) AS id,
           kind, reference, memo, n
      FROM unnest(%(kind)b::text[], %(reference)b::text[], %(memo)b::text[])
           WITH ORDINALITY AS v(kind, reference, memo, n)
), entries AS (
    INSERT INTO {_table(JournalEntry)} (id, kind, reference, memo, created_at)
    SELECT id, kind, reference, memo, %(now)b::timestamptz FROM entry ORDER BY n
), postings AS (
    INSERT INTO {_table(Posting)} (entry_id, account_id, asset_id, bucket, amount)
    SELECT entry.id, v.account_id, v.asset_id, v.bucket, v.amount
      FROM unnest(%(entry)b::bigint[], %(account)b::bigint[], %(asset)b::bigint[],
                  %(bucket)b::text[], %(amount)b::numeric[])
           WITH ORDINALITY AS v(n, account_id, asset_id, bucket, amount, k)
      JOIN entry ON entry.n = v.n
     ORDER BY k
)
SELECT id FROM entry ORDER BY n
"""  # noqa: S608 - table names from model metadata; values are bound

# Every locked row moved by its net change, in one prepared statement (arrays, one per column:
# `ids`, then one per bucket, named after it).
BALANCES_MOVE = f"""
UPDATE {_table(Balance)} AS b
   SET {", ".join(f"{bucket} = b.{bucket} + v.{bucket}" for bucket in _BUCKETS)},
       updated_at = %(now)b::timestamptz
  FROM unnest(%(ids)b::bigint[], {", ".join(f"%({bucket})b::numeric[]" for bucket in _BUCKETS)})
       AS v(id, {", ".join(_BUCKETS)})
 WHERE b.id = v.id
"""  # noqa: S608 - table name from model metadata, columns from the bucket enum; values are bound


# --- row locks (accounts.lock_objects) ----------------------------------------------------

# A transaction-scoped advisory lock on (namespace, hash of an idempotency key).
IDEMPOTENCY_KEY_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

# One prepared statement (the matcher runs it every batch). Rows are locked one pair at a time
# in the sorted order of the pairs (LATERAL, in ordinality order), each through the
# (account, asset) unique index; only the balance rows are locked, never the account or asset
# rows (a lock on those would serialise every balance of an asset on its one asset row).
BALANCES_LOCK = f"""
SELECT {select_columns(Balance, "b")}
  FROM unnest(%(accounts)b::bigint[], %(assets)b::bigint[])
       WITH ORDINALITY AS v(account_id, asset_id, n),
       LATERAL (
           SELECT * FROM {_table(Balance)} b
            WHERE b.account_id = v.account_id AND b.asset_id = v.asset_id
              FOR NO KEY UPDATE
       ) AS b
 ORDER BY v.n
"""  # noqa: S608 - table name from model metadata; values are bound


# --- the ledger's invariants (accounts.selectors) -----------------------------------------

_ACCOUNT = _table(Account)
_ASSET = _table(Asset)
_BALANCE = _table(Balance)
_ENTRY = _table(JournalEntry)
_POSTING = _table(Posting)
_USER = get_user_model()._meta.db_table

# How a break names an account (`acc` an account row, `u` its user's row).
_ACCOUNT_LABEL = f"""
    CASE WHEN acc.kind = '{Account.Kind.CUSTOMER.value}'
         THEN 'account #' || acc.id || ' (' || u.username || ')'
         ELSE acc.kind || ' account #' || acc.id END
"""

# Rows: entry id, asset code, precision, sum.
ENTRY_BALANCED = f"""
        SELECT p.entry_id, a.code, a.precision, SUM(p.amount)
          FROM {_POSTING} p JOIN {_ASSET} a ON a.id = p.asset_id
         GROUP BY p.entry_id, a.code, a.precision
        HAVING SUM(p.amount) <> 0
         ORDER BY p.entry_id, a.code
"""  # noqa: S608 - table names from model metadata

# Rows: entry id, kind, reference.
ENTRY_HAS_POSTINGS = f"""
        SELECT e.id, e.kind, e.reference FROM {_ENTRY} e
         WHERE NOT EXISTS (SELECT 1 FROM {_POSTING} p WHERE p.entry_id = e.id)
         ORDER BY e.id
"""  # noqa: S608 - table names from model metadata

# Rows: asset code, precision, sum.
BALANCES_SUM_TO_ZERO = f"""
        SELECT a.code, a.precision, SUM(b.available + b.held + b.pending)
          FROM {_BALANCE} b JOIN {_ASSET} a ON a.id = b.asset_id
         GROUP BY a.code, a.precision
        HAVING SUM(b.available + b.held + b.pending) <> 0
         ORDER BY a.code
"""  # noqa: S608 - table names from model metadata

# Rows: asset code, precision, sum.
POSTINGS_SUM_TO_ZERO = f"""
        SELECT a.code, a.precision, SUM(p.amount)
          FROM {_POSTING} p JOIN {_ASSET} a ON a.id = p.asset_id
         GROUP BY a.code, a.precision
        HAVING SUM(p.amount) <> 0
         ORDER BY a.code
"""  # noqa: S608 - table names from model metadata

# Rows: account label, asset code, precision, then each of available, held, pending as the
# balance row has it and as its postings sum.
BALANCE_EQUALS_POSTINGS = f"""
        WITH posted AS (
            SELECT account_id, asset_id,
                   COALESCE(SUM(amount) FILTER (WHERE bucket = '{Bucket.AVAILABLE.value}'), 0)
                       AS available,
                   COALESCE(SUM(amount) FILTER (WHERE bucket = '{Bucket.HELD.value}'), 0) AS held,
                   COALESCE(SUM(amount) FILTER (WHERE bucket = '{Bucket.PENDING.value}'), 0)
                       AS pending
              FROM {_POSTING} GROUP BY account_id, asset_id
        ), compared AS (
            SELECT COALESCE(b.account_id, p.account_id) AS account_id,
                   COALESCE(b.asset_id, p.asset_id) AS asset_id,
                   COALESCE(b.available, 0) AS b_available, COALESCE(p.available, 0) AS p_available,
                   COALESCE(b.held, 0) AS b_held, COALESCE(p.held, 0) AS p_held,
                   COALESCE(b.pending, 0) AS b_pending, COALESCE(p.pending, 0) AS p_pending
              FROM {_BALANCE} b
              FULL OUTER JOIN posted p
                ON p.account_id = b.account_id AND p.asset_id = b.asset_id
        )
        SELECT {_ACCOUNT_LABEL}, a.code, a.precision,
               c.b_available, c.p_available, c.b_held, c.p_held, c.b_pending, c.p_pending
          FROM compared c
          JOIN {_ACCOUNT} acc ON acc.id = c.account_id
          LEFT JOIN {_USER} u ON u.id = acc.user_id
          JOIN {_ASSET} a ON a.id = c.asset_id
         WHERE c.b_available <> c.p_available OR c.b_held <> c.p_held
            OR c.b_pending <> c.p_pending
         ORDER BY c.account_id, a.code
"""  # noqa: S608 - table names from model metadata, values from the models' enums

# Rows: account label, asset code, precision, available, held, pending.
NO_NEGATIVE_BUCKET = f"""
        SELECT {_ACCOUNT_LABEL}, a.code, a.precision, b.available, b.held, b.pending
          FROM {_BALANCE} b
          JOIN {_ACCOUNT} acc ON acc.id = b.account_id
          LEFT JOIN {_USER} u ON u.id = acc.user_id
          JOIN {_ASSET} a ON a.id = b.asset_id
         WHERE acc.kind <> '{Account.Kind.EXTERNAL.value}'
           AND (b.available < 0 OR b.held < 0 OR b.pending < 0)
         ORDER BY b.account_id, a.code
"""  # noqa: S608 - table names from model metadata, values from the models' enums

# Rows: balance id, account id, the balance's account kind, the account's kind.
BALANCE_KIND_MATCHES_ACCOUNT = f"""
        SELECT b.id, b.account_id, b.account_kind, acc.kind FROM {_BALANCE} b
          JOIN {_ACCOUNT} acc ON acc.id = b.account_id
         WHERE b.account_kind <> acc.kind ORDER BY b.id
"""  # noqa: S608 - table names from model metadata

# Rows: posting id, entry id, asset code, precision, amount.
POSTING_WITHIN_PRECISION = f"""
        SELECT p.id, p.entry_id, a.code, a.precision, p.amount
          FROM {_POSTING} p JOIN {_ASSET} a ON a.id = p.asset_id
         WHERE p.amount <> round(p.amount, a.precision)
         ORDER BY p.id
"""  # noqa: S608 - table names from model metadata
