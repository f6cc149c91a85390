"""Row locks for the accounts app, always taken in one order so transactions never deadlock.

Global order: account → instrument → order → position; inside the ledger, after those, the
idempotency keys of the call and then the balance rows, each group sorted.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from django.db import connection

from accounts.models import Account, Balance

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
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [IDEMPOTENCY_LOCK_NAMESPACE, key],
            )


def balances_lock(
    *, pairs: Iterable[tuple[int, int]], account_kinds: dict[int, str]
) -> dict[tuple[int, int], Balance]:
    """Lock the balance row of each (account id, asset id), creating the missing ones at zero.

    Rows are created and locked one by one in (account, asset) order, so a transaction never
    holds a row while it waits for one that sorts before it.
    """
    locked: dict[tuple[int, int], Balance] = {}
    for account_id, asset_id in sorted(set(pairs)):
        # of=self and no ordering: Balance's default ordering joins account and asset, and a
        # plain FOR NO KEY UPDATE would lock those rows too (serialising every balance of an
        # asset on its one asset row, and deadlocking against account locks).
        rows = (
            Balance.objects.select_for_update(no_key=True, of=("self",))
            .filter(account_id=account_id, asset_id=asset_id)
            .order_by("pk")
        )
        balance = rows.first()
        if balance is None:
            Balance.objects.bulk_create(
                [
                    Balance(
                        account_id=account_id,
                        asset_id=asset_id,
                        account_kind=account_kinds[account_id],
                    )
                ],
                ignore_conflicts=True,
            )
            balance = rows.get()
        locked[(account_id, asset_id)] = balance
    return locked
