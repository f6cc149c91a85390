"""Assertions shared by the accounts tests."""

from __future__ import annotations

from decimal import Decimal

from accounts import selectors
from accounts.models import Account, Asset, Balance, IdempotencyKey, JournalEntry, Posting


def balance_of(account: Account, asset: Asset) -> tuple[Decimal, Decimal, Decimal]:
    """(available, held, pending) of the account in the asset."""
    row = selectors.balance_get(account=account, asset=asset)
    return row.available, row.held, row.pending


def ledger_state() -> tuple:
    """A fingerprint of every ledger table, to prove that a refused call changed nothing."""
    return (
        list(JournalEntry.objects.order_by("pk").values_list()),
        list(Posting.objects.order_by("pk").values_list()),
        list(
            Balance.objects.order_by("pk").values_list(
                "account_id", "asset_id", "available", "held", "pending"
            )
        ),
        list(IdempotencyKey.objects.order_by("pk").values_list()),
    )


def assert_ledger_sound() -> None:
    breaks = selectors.ledger_verify()
    assert breaks == [], "\n".join(map(str, breaks))
