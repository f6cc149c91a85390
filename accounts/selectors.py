"""Reads for accounts and the ledger: balances, history, statements, and the invariants."""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Q, QuerySet, Sum

from accounts import sql
from accounts.models import Account, Asset, Balance, Bucket, Posting

if TYPE_CHECKING:
    from django.contrib.auth.models import User

ZERO = Decimal(0)


def _exact(amount: Decimal | None, asset: Asset | int) -> Decimal:
    """The amount at its asset's precision (the database stores 18 places for every asset)."""
    precision = asset if isinstance(asset, int) else asset.precision
    return (amount or ZERO).quantize(Decimal(1).scaleb(-precision))


def account_for_user(*, user: User) -> Account | None:
    """Return the user's trading account, or None when they have none."""
    return Account.objects.select_related("user").filter(user=user).first()


def account_get(*, account_id: int | None = None, username: str | None = None) -> Account | None:
    """Return an account by id or by its owner's username, or None."""
    accounts = Account.objects.select_related("user")
    if account_id is not None:
        return accounts.filter(pk=account_id).first()
    if username is not None:
        return accounts.filter(user__username=username).first()
    return None


@dataclass(frozen=True, slots=True)
class BalanceRow:
    asset: Asset
    available: Decimal
    held: Decimal
    pending: Decimal

    @property
    def total(self) -> Decimal:
        return self.available + self.held + self.pending

    @property
    def settled(self) -> Decimal:
        """What is settled: available plus held (pending is traded, not yet settled)."""
        return self.available + self.held


def balance_list(*, account: Account, include_every_asset: bool = False) -> list[BalanceRow]:
    """Return the account's balance in each asset it holds (or in every asset), by code."""
    rows = {
        balance.asset_id: balance
        for balance in Balance.objects.filter(account=account).select_related("asset")
    }
    assets = (
        list(Asset.objects.order_by("code"))
        if include_every_asset
        else sorted((balance.asset for balance in rows.values()), key=lambda asset: asset.code)
    )
    result = []
    for asset in assets:
        balance = rows.get(asset.pk)
        result.append(
            BalanceRow(
                asset=asset,
                available=_exact(balance.available if balance else None, asset),
                held=_exact(balance.held if balance else None, asset),
                pending=_exact(balance.pending if balance else None, asset),
            )
        )
    return result


def balances_of(account_ids: list[int]) -> dict[int, list[BalanceRow]]:
    """Each account's balance in every asset it holds, by code, in one query (the streams')."""
    rows: dict[int, list[BalanceRow]] = {account_id: [] for account_id in account_ids}
    balances = (
        Balance.objects.filter(account_id__in=account_ids)
        .select_related("asset")
        .order_by("account_id", "asset__code")
    )
    for balance in balances:
        rows[balance.account_id].append(
            BalanceRow(
                asset=balance.asset,
                available=_exact(balance.available, balance.asset),
                held=_exact(balance.held, balance.asset),
                pending=_exact(balance.pending, balance.asset),
            )
        )
    return rows


def balance_get(*, account: Account, asset: Asset) -> BalanceRow:
    """Return one balance (zero in each bucket when the account never held the asset)."""
    balance = Balance.objects.filter(account=account, asset=asset).first()
    return BalanceRow(
        asset=asset,
        available=_exact(balance.available if balance else None, asset),
        held=_exact(balance.held if balance else None, asset),
        pending=_exact(balance.pending if balance else None, asset),
    )


def balance_table(
    *, username: str | None = None, asset_code: str | None = None, include_platform: bool = False
) -> QuerySet[Balance]:
    """Return balance rows for operators, by account then asset."""
    balances = Balance.objects.select_related("account__user", "asset").order_by(
        "account_id", "asset__code"
    )
    if username is not None:
        balances = balances.filter(account__user__username=username)
    if asset_code is not None:
        balances = balances.filter(asset__code=asset_code.upper())
    if not include_platform:
        balances = balances.filter(account__kind=Account.Kind.CUSTOMER)
    return balances


def ledger_history(*, account: Account, page: int | str = 1, page_size: int | None = None) -> Page:
    """Return one page of the account's postings, newest first, with their entries."""
    postings = (
        Posting.objects.filter(account=account)
        .select_related("entry", "asset")
        .order_by("-entry_id", "-pk")
    )
    paginator = Paginator(postings, page_size or settings.ACCOUNTS_LEDGER_PAGE_SIZE)
    return paginator.get_page(page)


@dataclass(frozen=True, slots=True)
class Buckets:
    available: Decimal = ZERO
    held: Decimal = ZERO
    pending: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.available + self.held + self.pending

    def plus(self, bucket: str, amount: Decimal) -> Buckets:
        values = {name: getattr(self, name) for name in Bucket.values}
        values[bucket] += amount
        return Buckets(**values)


@dataclass(frozen=True, slots=True)
class StatementLine:
    at: datetime.datetime
    entry_id: int
    kind: str
    reference: str
    bucket: str
    amount: Decimal


@dataclass(slots=True)
class AssetStatement:
    asset: Asset
    opening: Buckets
    closing: Buckets
    lines: list[StatementLine] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Statement:
    account: Account
    start: datetime.datetime
    end: datetime.datetime
    assets: list[AssetStatement]


def account_statement(
    *, account: Account, start: datetime.datetime, end: datetime.datetime
) -> Statement:
    """Return, per asset, the opening balance at `start`, the movements in [start, end) and the
    closing balance at `end`, all from the postings (the ledger, not the balance table).

    Raises ValueError for a naive datetime or an end before the start.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("statement dates must be timezone-aware")
    if end < start:
        raise ValueError("the statement ends before it starts")
    postings = Posting.objects.filter(account=account)
    opening_sums = (
        postings.filter(entry__created_at__lt=start)
        .values("asset_id", "bucket")
        .annotate(total=Sum("amount"))
    )
    openings: dict[int, Buckets] = defaultdict(Buckets)
    for row in opening_sums:
        openings[row["asset_id"]] = openings[row["asset_id"]].plus(row["bucket"], row["total"])
    movements = (
        postings.filter(entry__created_at__gte=start, entry__created_at__lt=end)
        .select_related("entry", "asset")
        .order_by("entry_id", "pk")
    )
    lines: dict[int, list[StatementLine]] = defaultdict(list)
    for posting in movements:
        lines[posting.asset_id].append(
            StatementLine(
                at=posting.entry.created_at,
                entry_id=posting.entry_id,
                kind=posting.entry.kind,
                reference=posting.entry.reference,
                bucket=posting.bucket,
                amount=_exact(posting.amount, posting.asset),
            )
        )
    assets = Asset.objects.filter(pk__in=set(openings) | set(lines)).order_by("code")
    statements = []
    for asset in assets:
        opening = openings[asset.pk]
        opening = Buckets(*(_exact(getattr(opening, name), asset) for name in Bucket.values))
        closing = opening
        for line in lines[asset.pk]:
            closing = closing.plus(line.bucket, line.amount)
        statements.append(AssetStatement(asset, opening, closing, lines[asset.pk]))
    return Statement(account=account, start=start, end=end, assets=statements)


# ---------------------------------------------------------------------------------------------
# Invariants (what `manage.py ledger_check` and the tests prove)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerBreak:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


@dataclass(frozen=True, slots=True)
class _Check:
    invariant: str
    sql: str
    # str.format template for one row; amounts are shown at the precision in column
    # `precision_column` of the row (when the row has one).
    template: str
    precision_column: int | None = None


# The statements are in `accounts.sql`, each with the columns its template reads.
_CHECKS: list[_Check] = [
    _Check(
        "entry_balanced",
        sql.ENTRY_BALANCED,
        "journal entry #{0}: {1} postings sum to {3}, not zero",
        precision_column=2,
    ),
    _Check(
        "entry_has_postings",
        sql.ENTRY_HAS_POSTINGS,
        "journal entry #{0} ({1} {2}) has no postings",
    ),
    _Check(
        "asset_sums_to_zero",
        sql.BALANCES_SUM_TO_ZERO,
        "{0}: balances over all accounts sum to {2}, not zero",
        precision_column=1,
    ),
    _Check(
        "asset_sums_to_zero",
        sql.POSTINGS_SUM_TO_ZERO,
        "{0}: postings over all accounts sum to {2}, not zero",
        precision_column=1,
    ),
    _Check(
        "balance_equals_postings",
        sql.BALANCE_EQUALS_POSTINGS,
        "{0} {1}: balance available/held/pending is {3}/{5}/{7} "
        "but its postings sum to {4}/{6}/{8}",
        precision_column=2,
    ),
    _Check(
        "no_negative_bucket",
        sql.NO_NEGATIVE_BUCKET,
        "{0} {1}: a bucket is negative (available {3}, held {4}, pending {5})",
        precision_column=2,
    ),
    _Check(
        "balance_kind_matches_account",
        sql.BALANCE_KIND_MATCHES_ACCOUNT,
        "balance #{0} says account #{1} is {2}, but it is {3}",
    ),
    _Check(
        "posting_within_precision",
        sql.POSTING_WITHIN_PRECISION,
        "posting #{0} (entry #{1}) of {4} {2} has more than {3} decimal places",
    ),
]

# Invariants other apps add (trading: held equals open orders, positions equal fills).
_EXTRA_CHECKS: list[_Check] = []


def ledger_check_register(
    *, invariant: str, sql: str, template: str, precision_column: int | None = None
) -> None:
    """Add an invariant to ledger_verify: `sql` returns one row per break, shown by `template`."""
    if all(check.sql != sql for check in _EXTRA_CHECKS):
        _EXTRA_CHECKS.append(_Check(invariant, sql, template, precision_column))


# Report at most this many breaks of each check; the count of the rest is still given.
BREAKS_SHOWN_PER_CHECK = 50


def _shown(value: object, precision: int | None) -> object:
    if isinstance(value, Decimal):
        if precision is not None and value == round(value, precision):
            return f"{_exact(value, precision):f}"
        return f"{value.normalize():f}"
    return value


def ledger_verify() -> list[LedgerBreak]:
    """Return every break of the ledger's invariants; an empty list means the ledger is sound.

    Each journal entry sums to zero per asset and has postings; each asset sums to zero over
    all accounts; each balance row equals the sum of its postings bucket by bucket; no bucket
    of an account other than `external` is negative; no posting is more precise than its asset.
    """
    breaks: list[LedgerBreak] = []
    with connection.cursor() as cursor:
        for check in [*_CHECKS, *_EXTRA_CHECKS]:
            cursor.execute(check.sql)
            rows = cursor.fetchall()
            for row in rows[:BREAKS_SHOWN_PER_CHECK]:
                precision = None if check.precision_column is None else row[check.precision_column]
                shown = [_shown(value, precision) for value in row]
                breaks.append(LedgerBreak(check.invariant, check.template.format(*shown)))
            if len(rows) > BREAKS_SHOWN_PER_CHECK:
                more = len(rows) - BREAKS_SHOWN_PER_CHECK
                breaks.append(LedgerBreak(check.invariant, f"… and {more} more like these"))
    return breaks


def customer_accounts(*, search: str | None = None) -> QuerySet[Account]:
    """Return customer accounts, optionally those whose owner's name or email matches."""
    accounts = Account.objects.filter(kind=Account.Kind.CUSTOMER).select_related("user")
    if search:
        accounts = accounts.filter(
            Q(user__username__icontains=search) | Q(user__email__icontains=search)
        )
    return accounts
