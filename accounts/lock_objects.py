"""Row locks for the accounts app, always taken in one order so transactions never deadlock.

Global order: account → instrument → order → position; inside the ledger, after those, the
idempotency keys of the call and then the balance rows, each group sorted.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from django.db import connection

from accounts import sql
from accounts.models import Account, Balance
from tredye.db import instances_fetch

# First half of the two-int advisory lock key: the namespace of ledger idempotency keys.
IDEMPOTENCY_LOCK_NAMESPACE = zlib.crc32(b"tredye.accounts.idempotency") - 2**31


def accounts_lock(*, account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock these accounts (FOR NO KEY UPDATE, in pk order) and return them freshly read."""
    ids = sorted(set(account_ids))
    locked = (
        Account.objects.select_for_update(no_key=True, of=("self",))
        .filter(pk__in=ids)
        .select_related("user")
        .order_by("pk")
    )
    return {account.pk: account for account in locked}


def idempotency_keys_lock(*, keys: Iterable[str]) -> None:
    """Serialise calls that share an idempotency key until this transaction ends."""
    with connection.cursor() as cursor:
        for key in sorted(set(keys)):
            cursor.execute(sql.IDEMPOTENCY_KEY_LOCK, [IDEMPOTENCY_LOCK_NAMESPACE, key])


def balances_lock(
    *, pairs: Iterable[tuple[int, int]], account_kinds: dict[int, str]
) -> dict[tuple[int, int], Balance]:
    """Lock the balance row of each (account id, asset id), creating the missing ones at zero.

    One query locks every existing row, in (account, asset) order: PostgreSQL takes the row
    locks as the sorted rows leave the sort, so a transaction never holds a row while it waits
    for one that sorts before it. Missing rows are then inserted (they are new, so nobody else
    holds them; only a concurrent insert of the same pair can make this wait) and locked.
    """
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    locked = _balances_select(wanted)
    missing = [pair for pair in wanted if pair not in locked]
    if missing:
        Balance.objects.bulk_create(
            [
                Balance(
                    account_id=account_id, asset_id=asset_id, account_kind=account_kinds[account_id]
                )
                for account_id, asset_id in missing
            ],
            ignore_conflicts=True,
        )
        locked |= _balances_select(missing)
    return locked


def _balances_select(pairs: list[tuple[int, int]]) -> dict[tuple[int, int], Balance]:
    """Lock and read the existing balance rows of these sorted pairs, in one prepared statement
    (`accounts.sql.BALANCES_LOCK`: one pair at a time, in the pairs' order)."""
    rows = instances_fetch(
        Balance,
        sql.BALANCES_LOCK,
        {"accounts": [account for account, _ in pairs], "assets": [asset for _, asset in pairs]},
    )
    return {(row.account_id, row.asset_id): row for row in rows}
