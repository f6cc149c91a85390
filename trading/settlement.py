"""Settlement: what a fill credited to `pending` becomes `available` on its settlement date.

`settlement_run(date=D)` settles every trade side due on or before D and not settled yet, one
account at a time, each account in ONE transaction: lock the account, re-read its unsettled
sides, sum them per asset, post one balanced journal entry (kind `settlement`) moving each
asset's net from the account's `pending` to its `available` through the `clearing` account,
write one `Settlement` row per asset and mark every side with it. A side is marked only while
unmarked and the row count is checked, so a side is settled exactly once; a run stopped
halfway has committed the accounts it finished, and the next run settles the rest. Running it
again changes nothing. Decision 0015.

A side is what its account receives: the buyer the base quantity, the seller the quote amount
less its fee (`trading.sql._unsettled_sides`, the one place that says so). A seller's side of
zero (a fill whose quote amount rounds to nothing) moves nothing and is never settled.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction

from accounts.exceptions import LedgerError
from accounts.lock_objects import accounts_lock
from accounts.models import Account, Asset, Bucket, EntryKind
from accounts.services import EntrySpec, Leg, asset_quantum, ledger_post, platform_account_open
from trading import business_days, sql
from trading.models import Settlement
from tredye.db import prepared_cursor

# Accounts whose due sides are read in one statement before their locks.
ACCOUNTS_PER_READ = 500


class SettlementError(Exception):
    """A settlement run was refused or found the ledger other than it must be; nothing of the
    account concerned was written."""


@dataclass(frozen=True, slots=True)
class SettlementSummary:
    date: datetime.date
    accounts: int  # accounts settled by this run
    settlements: int  # Settlement rows written (one per account and asset)
    trades: int  # trade sides settled

    def as_dict(self) -> dict[str, object]:
        return {
            "date": self.date.isoformat(),
            "accounts": self.accounts,
            "settlements": self.settlements,
            "trades": self.trades,
        }


@dataclass(frozen=True, slots=True)
class SettlementProgress:
    done: int  # accounts looked at so far
    total: int  # accounts with sides due when the run started
    account_id: int
    settlements: int  # rows this account got (0: another run settled it first)


@dataclass(frozen=True, slots=True)
class _Side:
    trade_id: int
    side: str  # "buy" or "sell"
    asset_id: int
    amount: Decimal


def settlement_date_check(date: datetime.date, *, today: datetime.date | None = None) -> None:
    """Refuse a date after today's trade date: nothing may settle before its day.

    Raises SettlementError.
    """
    if not isinstance(date, datetime.date) or isinstance(date, datetime.datetime):
        raise SettlementError(f"a settlement date is a date, not {date!r}")
    current = business_days.today() if today is None else today
    if date > current:
        raise SettlementError(
            f"cannot settle {date.isoformat()}: today's trade date is {current.isoformat()}, "
            "and nothing settles before its day"
        )


def settlement_run(
    *,
    date: datetime.date,
    progress: Callable[[SettlementProgress], None] | None = None,
) -> SettlementSummary:
    """Settle every trade side due on or before `date` that is not settled yet.

    One transaction per account (see the module's docstring); `progress` is called after each.
    Raises SettlementError for a date after today's trade date, or when an account's ledger
    cannot move what its trades say is pending (that account is rolled back, the accounts
    settled before it stay settled).
    """
    settlement_date_check(date)
    cursor = prepared_cursor()
    cursor.execute(sql.SETTLEMENT_ACCOUNTS_DUE, {"date": date}, prepare=True)
    account_ids = [row[0] for row in cursor.fetchall()]
    if not account_ids:
        return SettlementSummary(date=date, accounts=0, settlements=0, trades=0)
    with transaction.atomic():
        clearing = platform_account_open(kind=Account.Kind.CLEARING)
    accounts = settlements = sides = 0
    done = 0
    for start in range(0, len(account_ids), ACCOUNTS_PER_READ):
        batch = account_ids[start : start + ACCOUNTS_PER_READ]
        cursor = prepared_cursor()
        cursor.execute(sql.SETTLEMENT_SIDES_DUE, {"date": date, "accounts": batch}, prepare=True)
        due: dict[int, list[int]] = defaultdict(list)
        for account_id, trade_id, _side, _asset, _amount in cursor.fetchall():
            due[account_id].append(trade_id)
        for account_id in batch:
            try:
                written, settled_sides = _account_settle(
                    account_id=account_id,
                    date=date,
                    trade_ids=due.get(account_id, []),
                    clearing=clearing,
                )
            except LedgerError as error:  # e.g. less pending than its trades say: a break
                raise SettlementError(
                    f"account #{account_id} cannot settle: {error}; nothing of it was settled "
                    f"({accounts} account(s) before it were)"
                ) from error
            done += 1
            if written:
                accounts += 1
                settlements += written
                sides += settled_sides
            if progress is not None:
                progress(SettlementProgress(done, len(account_ids), account_id, written))
    return SettlementSummary(date=date, accounts=accounts, settlements=settlements, trades=sides)


@transaction.atomic(durable=True)
def _account_settle(
    *, account_id: int, date: datetime.date, trade_ids: list[int], clearing: Account
) -> tuple[int, int]:
    """Settle these sides of one account (those still unsettled once it is locked); return
    (Settlement rows written, sides settled)."""
    if not trade_ids:
        return 0, 0
    account = accounts_lock(account_ids=[account_id]).get(account_id)
    if account is None:
        raise SettlementError(f"account #{account_id} has trades but does not exist")
    cursor = prepared_cursor()
    cursor.execute(
        sql.SETTLEMENT_SIDES_LOCKED,
        {"trade_ids": trade_ids, "account": account_id},
        prepare=True,
    )
    sides = [_Side(*row) for row in cursor.fetchall()]
    if not sides:
        return 0, 0  # another run settled them while this one waited for the lock
    per_asset: dict[int, list[_Side]] = defaultdict(list)
    for side in sides:
        per_asset[side.asset_id].append(side)
    assets = Asset.objects.in_bulk(list(per_asset))
    legs: list[Leg] = []
    totals: dict[int, Decimal] = {}
    for asset_id, asset_sides in sorted(per_asset.items()):
        asset = assets[asset_id]
        total = sum((side.amount for side in asset_sides), Decimal(0))
        amount = total.quantize(asset_quantum(asset))
        if amount != total:  # a trade's legs were booked at the asset's precision
            raise SettlementError(
                f"account #{account_id}: {total} {asset.code} pending is finer than the "
                f"asset's {asset.precision} decimal places; nothing was settled"
            )
        totals[asset_id] = amount
        legs += [
            Leg(account, asset, Bucket.PENDING, -amount),
            Leg(clearing, asset, Bucket.AVAILABLE, amount),
            Leg(clearing, asset, Bucket.AVAILABLE, -amount),
            Leg(account, asset, Bucket.AVAILABLE, amount),
        ]
    (entry,) = ledger_post(
        entries=[
            EntrySpec(
                kind=EntryKind.SETTLEMENT,
                reference=f"settlement {date.isoformat()} account {account_id}",
                legs=tuple(legs),
                memo=f"{len(sides)} trade side{'' if len(sides) == 1 else 's'} due by {date}",
            )
        ]
    )
    rows = Settlement.objects.bulk_create(
        [
            Settlement(
                account_id=account_id,
                asset_id=asset_id,
                date=date,
                amount=totals[asset_id],
                trade_count=len(per_asset[asset_id]),
                entry=entry,
            )
            for asset_id in sorted(per_asset)
        ]
    )
    settlement_of = {row.asset_id: row.pk for row in rows}
    for side_name, statement in (
        ("buy", sql.SETTLEMENT_MARK_BUYER),
        ("sell", sql.SETTLEMENT_MARK_SELLER),
    ):
        marked = [side for side in sides if side.side == side_name]
        if not marked:
            continue
        with connection.cursor() as update:
            update.execute(
                statement,
                {
                    "trade_ids": [side.trade_id for side in marked],
                    "settlement_ids": [settlement_of[side.asset_id] for side in marked],
                },
            )
            if update.rowcount != len(marked):
                raise SettlementError(
                    f"account #{account_id}: {len(marked)} {side_name} sides to mark settled, "
                    f"{update.rowcount} were still unsettled; nothing was settled"
                )
    return len(rows), len(sides)


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    asset: Asset
    date: datetime.date  # the date it settles on
    amount: Decimal
    trades: int


def settlement_pending_list(*, account_id: int) -> list[PendingSettlement]:
    """What of the account's `pending` settles on which date, per asset (by code, then date)."""
    cursor = prepared_cursor()
    cursor.execute(sql.SETTLEMENT_PENDING_BY_DATE, {"account": account_id}, prepare=True)
    rows = cursor.fetchall()
    assets = Asset.objects.in_bulk({row[0] for row in rows})
    pending = [
        PendingSettlement(
            asset=assets[asset_id],
            date=date,
            amount=amount.quantize(asset_quantum(assets[asset_id])),
            trades=count,
        )
        for asset_id, date, amount, count in rows
    ]
    return sorted(pending, key=lambda row: (row.asset.code, row.date))
