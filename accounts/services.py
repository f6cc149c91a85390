"""Writes to accounts and the ledger.

Two layers:

- The top-level services (`deposit`, `withdraw`, `hold`, `release`, `transfer`,
  `user_signup`, `account_freeze`, `account_unfreeze`) are each one durable transaction: they
  lock the customer accounts involved first, replay a repeated idempotency key, apply the
  account's policy (frozen or not), then post.
- The building blocks (`ledger_post`, `movement_entry`, `account_open`,
  `platform_account_open`) run inside a transaction the caller already holds
  (`atomic(savepoint=False)`), so the matcher can post a whole batch of fills in its own
  transaction. `ledger_post` checks funds itself, so it never writes a negative bucket; the
  caller locks the customer accounts it touches first (lock_objects.accounts_lock).

Amounts are `Decimal` (or `int`); a float is refused, and so is an amount with more decimal
places than its asset allows: nothing is ever rounded.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from accounts import sql
from accounts.exceptions import (
    AccountFrozen,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidEntry,
    LedgerError,
    UnknownAccount,
    UnknownAsset,
)
from accounts.lock_objects import accounts_lock, balances_lock, idempotency_keys_lock
from accounts.models import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    Account,
    Asset,
    Balance,
    Bucket,
    EntryKind,
    IdempotencyKey,
    JournalEntry,
)
from tredye.db import prepared_cursor

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Largest absolute amount NUMERIC(38, 18) stores: 20 integer digits.
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_MAX_DIGITS - AMOUNT_DECIMAL_PLACES)
_WIDE = Context(prec=AMOUNT_MAX_DIGITS + 10)

REFERENCE_MAX_LENGTH = JournalEntry._meta.get_field("reference").max_length
MEMO_MAX_LENGTH = JournalEntry._meta.get_field("memo").max_length
IDEMPOTENCY_KEY_MAX_LENGTH = IdempotencyKey._meta.get_field("key").max_length


# ---------------------------------------------------------------------------------------------
# Pure helpers: validation and the shape of an entry
# ---------------------------------------------------------------------------------------------


_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(AMOUNT_DECIMAL_PLACES + 1)}


def asset_quantum(asset: Asset) -> Decimal:
    quantum = _QUANTA.get(asset.precision)
    return Decimal(1).scaleb(-asset.precision) if quantum is None else quantum


def amount_format(amount: Decimal, asset: Asset) -> str:
    """Format an amount at its asset's precision, e.g. `1,250.50 USD`."""
    return f"{amount.quantize(asset_quantum(asset), context=_WIDE):,f} {asset.code}"


def amount_validate(*, amount: object, asset: Asset, signed: bool = False) -> Decimal:
    """Return the amount as an exact Decimal at the asset's precision.

    Raises InvalidAmount for a float or other non-Decimal, NaN or infinity, zero, a negative
    amount (unless `signed`), more decimal places than the asset allows, or a magnitude the
    ledger cannot store.
    """
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise InvalidAmount(
            f"amount must be a Decimal, not {type(amount).__name__} ({amount!r}): "
            "money is never a float"
        )
    value = Decimal(amount)
    if not value.is_finite():
        raise InvalidAmount(f"amount must be a finite number, got {value}")
    if value == 0:
        raise InvalidAmount("amount must not be zero")
    if value < 0 and not signed:
        raise InvalidAmount(f"amount must be positive, got {value}")
    if abs(value) >= AMOUNT_LIMIT:
        raise InvalidAmount(f"amount {value} is too large (limit {AMOUNT_LIMIT:,f})")
    try:
        exact = value.quantize(asset_quantum(asset), context=_WIDE)
    except InvalidOperation as error:
        raise InvalidAmount(f"amount {value} cannot be represented") from error
    if exact != value:
        raise InvalidAmount(
            f"{asset.code} allows {asset.precision} decimal place"
            f"{'' if asset.precision == 1 else 's'}; {value} has more (nothing is rounded)"
        )
    return exact


def asset_resolve(asset: Asset | str) -> Asset:
    """Return the Asset for an Asset or its code. Raises UnknownAsset."""
    if isinstance(asset, Asset):
        return asset
    if not isinstance(asset, str) or not asset.strip():
        raise UnknownAsset(f"unknown asset {asset!r}")
    code = asset.strip().upper()
    try:
        return Asset.objects.get(code=code)
    except Asset.DoesNotExist:
        raise UnknownAsset(f"unknown asset {code!r}") from None


def _text_validate(value: object, *, name: str, max_length: int | None, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidEntry(f"{name} must be text, not {type(value).__name__}")
    text = value.strip()
    if required and not text:
        raise InvalidEntry(f"{name} is required")
    if max_length is not None and len(text) > max_length:
        raise InvalidEntry(f"{name} is longer than {max_length} characters")
    return text


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of an entry: a signed amount into (or out of) one bucket of one account."""

    account: Account
    asset: Asset
    bucket: Bucket
    amount: Decimal


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """A journal entry to post: its legs must sum to zero per asset."""

    kind: EntryKind
    reference: str
    legs: tuple[Leg, ...]
    idempotency_key: str | None = None
    memo: str = ""

    def request_hash(self) -> str:
        """A digest of everything the entry does, independent of the order of its legs."""
        legs = sorted(
            [
                leg.account.pk,
                leg.asset.code,
                str(leg.bucket),
                format(leg.amount.quantize(asset_quantum(leg.asset), context=_WIDE), "f"),
            ]
            for leg in self.legs
        )
        canonical = json.dumps(
            {"kind": str(self.kind), "reference": self.reference, "memo": self.memo, "legs": legs},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


# Django's `Choices.values` builds a new list on each access; the matcher validates every leg.
_ENTRY_KINDS = frozenset(EntryKind.values)
_BUCKET_NAMES = frozenset(Bucket.values)


def entry_validate(spec: EntrySpec) -> EntrySpec:
    """Return the entry with its text trimmed and amounts exact.

    Raises InvalidEntry (unbalanced, empty, unknown kind or bucket, unsaved account, bad text)
    or InvalidAmount (a leg's amount).
    """
    if not isinstance(spec.kind, str) or spec.kind not in _ENTRY_KINDS:
        raise InvalidEntry(f"unknown entry kind {spec.kind!r}")
    reference = _text_validate(
        spec.reference, name="reference", max_length=REFERENCE_MAX_LENGTH, required=True
    )
    memo = _text_validate(spec.memo, name="memo", max_length=MEMO_MAX_LENGTH, required=False)
    key = spec.idempotency_key
    if key is not None:
        key = _text_validate(
            key, name="idempotency key", max_length=IDEMPOTENCY_KEY_MAX_LENGTH, required=True
        )
    if not spec.legs:
        raise InvalidEntry("a journal entry needs at least one posting")
    legs = []
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for leg in spec.legs:
        if not isinstance(leg.account, Account) or leg.account.pk is None:
            raise UnknownAccount(f"posting to an account that does not exist: {leg.account!r}")
        if not isinstance(leg.asset, Asset) or leg.asset.pk is None:
            raise UnknownAsset(f"unknown asset {leg.asset!r}")
        if not isinstance(leg.bucket, str) or leg.bucket not in _BUCKET_NAMES:
            raise InvalidEntry(f"unknown bucket {leg.bucket!r}")
        amount = amount_validate(amount=leg.amount, asset=leg.asset, signed=True)
        sums[leg.asset.code] += amount
        legs.append(Leg(leg.account, leg.asset, Bucket(leg.bucket), amount))
    unbalanced = {code: total for code, total in sums.items() if total != 0}
    if unbalanced:
        detail = ", ".join(f"{code} sums to {total}" for code, total in sorted(unbalanced.items()))
        raise InvalidEntry(f"journal entry does not balance: {detail}")
    return EntrySpec(EntryKind(spec.kind), reference, tuple(legs), key, memo)


def movement_entry(
    *,
    kind: EntryKind,
    source: Account,
    source_bucket: Bucket,
    destination: Account,
    destination_bucket: Bucket,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str | None = None,
    memo: str = "",
) -> EntrySpec:
    """Return the entry that moves a positive amount from one (account, bucket) to another.

    Raises UnknownAsset, InvalidAmount, or InvalidEntry when source and destination are the
    same bucket of the same account.
    """
    resolved = asset_resolve(asset)
    exact = amount_validate(amount=amount, asset=resolved)
    legs = (
        Leg(source, resolved, source_bucket, -exact),
        Leg(destination, resolved, destination_bucket, exact),
    )
    return _movement_validate(kind, legs, reference, idempotency_key, memo)


def _movement_validate(
    kind: EntryKind,
    legs: tuple[Leg, Leg],
    reference: str,
    idempotency_key: str | None,
    memo: str,
) -> EntrySpec:
    """The validated entry of a movement's two legs (out of one bucket, into another)."""
    source, destination = legs
    if source.account.pk == destination.account.pk and source.bucket == destination.bucket:
        raise InvalidEntry("source and destination are the same bucket of the same account")
    return entry_validate(
        EntrySpec(
            kind=kind,
            reference=reference,
            legs=legs,
            idempotency_key=idempotency_key,
            memo=memo,
        )
    )


def _account_label(account: Account) -> str:
    if account.kind == Account.Kind.CUSTOMER and account.user is not None:
        return f"account #{account.pk} ({account.user.get_username()})"
    return f"{account.kind} account #{account.pk}"


# ---------------------------------------------------------------------------------------------
# Building blocks: run inside the caller's transaction
# ---------------------------------------------------------------------------------------------


@transaction.atomic(savepoint=False)
def platform_account_open(*, kind: Account.Kind) -> Account:
    """Return the platform account of this kind (external, fees, clearing), opening it once."""
    if kind == Account.Kind.CUSTOMER or kind not in Account.Kind.values:
        raise UnknownAccount(f"{kind!r} is not a platform account kind")
    Account.objects.bulk_create([Account(kind=kind)], ignore_conflicts=True)
    return Account.objects.get(kind=kind)


@transaction.atomic(savepoint=False)
def account_open(*, user: User) -> Account:
    """Return the user's trading account, opening it if the user has none yet."""
    Account.objects.bulk_create(
        [Account(kind=Account.Kind.CUSTOMER, user=user)], ignore_conflicts=True
    )
    return Account.objects.select_related("user").get(user=user)


def _replayed(specs: Sequence[EntrySpec]) -> dict[int, JournalEntry]:
    """Lock the specs' idempotency keys; return the entry each already-used key produced.

    Raises IdempotencyConflict when a key was used for a different entry, and InvalidEntry
    when one batch uses a key twice.
    """
    keys = [spec.idempotency_key for spec in specs if spec.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        raise InvalidEntry("the same idempotency key appears twice in one batch")
    if not keys:
        return {}
    idempotency_keys_lock(keys=keys)
    used = {
        row.key: row for row in IdempotencyKey.objects.filter(key__in=keys).select_related("entry")
    }
    found: dict[int, JournalEntry] = {}
    for index, spec in enumerate(specs):
        row = used.get(spec.idempotency_key) if spec.idempotency_key else None
        if row is None:
            continue
        if row.request_hash != spec.request_hash():
            raise IdempotencyConflict(
                f"idempotency key {spec.idempotency_key!r} was already used for a different "
                f"request (journal entry #{row.entry_id})"
            )
        found[index] = row.entry
    return found


@transaction.atomic(savepoint=False)
def ledger_post(*, entries: Sequence[EntrySpec]) -> list[JournalEntry]:
    """Post journal entries and update balances in the caller's transaction.

    An entry whose idempotency key was used already is not posted again: its first journal
    entry is returned in its place. Balances move by the net of all entries, checked before
    anything is written; the caller should already hold the customer accounts' locks.

    Raises InvalidEntry, InvalidAmount, UnknownAccount, UnknownAsset, IdempotencyConflict,
    or InsufficientFunds (a bucket of an account other than `external` would go below zero).
    Because it does not open a savepoint, an error leaves the caller's transaction to be
    rolled back.
    """
    specs = [entry_validate(spec) for spec in entries]
    results: dict[int, JournalEntry] = _replayed(specs)
    to_post = [(index, spec) for index, spec in enumerate(specs) if index not in results]
    if not to_post:
        return [results[index] for index in range(len(specs))]

    deltas: dict[tuple[int, int], dict[str, Decimal]] = defaultdict(
        lambda: dict.fromkeys(_BUCKETS, Decimal(0))
    )
    accounts: dict[int, Account] = {}
    assets: dict[int, Asset] = {}
    for _, spec in to_post:
        for leg in spec.legs:
            deltas[(leg.account.pk, leg.asset.pk)][leg.bucket] += leg.amount
            accounts[leg.account.pk] = leg.account
            assets[leg.asset.pk] = leg.asset
    cursor = prepared_cursor()
    cursor.execute(sql.ACCOUNT_KINDS, {"ids": list(accounts)}, prepare=True)
    kinds = dict(cursor.fetchall())
    missing = set(accounts) - set(kinds)
    if missing:
        raise UnknownAccount(f"no account with id {', '.join(map(str, sorted(missing)))}")

    balances = balances_lock(pairs=deltas, account_kinds=kinds)
    for (account_id, asset_id), change in sorted(deltas.items()):
        if kinds[account_id] == Account.Kind.EXTERNAL:
            continue
        balance = balances[(account_id, asset_id)]
        for bucket, delta in change.items():
            current = getattr(balance, bucket)
            if current + delta < 0:
                asset = assets[asset_id]
                raise InsufficientFunds(
                    f"{_account_label(accounts[account_id])} has "
                    f"{amount_format(current, asset)} {bucket}, "
                    f"{amount_format(-delta, asset)} needed"
                )

    now = timezone.now()
    journal = _entries_insert([spec for _, spec in to_post], now)
    IdempotencyKey.objects.bulk_create(
        [
            IdempotencyKey(
                key=spec.idempotency_key,
                request_hash=spec.request_hash(),
                entry=entry,
                created_at=now,
            )
            for entry, (_, spec) in zip(journal, to_post, strict=True)
            if spec.idempotency_key is not None
        ]
    )
    _balances_move(
        [
            (balances[pair].pk, change)
            for pair, change in sorted(deltas.items())
            if any(delta != 0 for delta in change.values())
        ],
        now,
    )
    for entry, (index, _) in zip(journal, to_post, strict=True):
        results[index] = entry
    return [results[index] for index in range(len(specs))]


def _entries_insert(specs: list[EntrySpec], now: datetime.datetime) -> list[JournalEntry]:
    """Insert journal entries and all their postings in ONE prepared statement.

    The database checks the ledger's rules at the end of each statement (migration 0006): an
    entry and its postings must arrive together. Returns the saved entries, in order.
    """
    params: dict[str, object] = {
        "now": now,
        "kind": [str(spec.kind) for spec in specs],
        "reference": [spec.reference for spec in specs],
        "memo": [spec.memo for spec in specs],
        "entry": [],
        "account": [],
        "asset": [],
        "bucket": [],
        "amount": [],
    }
    for number, spec in enumerate(specs, start=1):
        for leg in spec.legs:
            params["entry"].append(number)  # type: ignore[attr-defined]
            params["account"].append(leg.account.pk)  # type: ignore[attr-defined]
            params["asset"].append(leg.asset.pk)  # type: ignore[attr-defined]
            params["bucket"].append(str(leg.bucket))  # type: ignore[attr-defined]
            params["amount"].append(leg.amount)  # type: ignore[attr-defined]
    cursor = prepared_cursor()
    cursor.execute(sql.ENTRIES_INSERT, params, prepare=True)
    ids = [row[0] for row in cursor.fetchall()]
    entries = []
    for entry_id, spec in zip(ids, specs, strict=True):
        entry = JournalEntry(
            id=entry_id, kind=spec.kind, reference=spec.reference, memo=spec.memo, created_at=now
        )
        entry._state.adding = False
        entry._state.db = DEFAULT_DB_ALIAS
        entries.append(entry)
    return entries


_BUCKETS = tuple(Bucket.values)


_ZERO = Decimal(0)


def _balances_move(moves: list[tuple[int, dict[str, Decimal]]], now: object) -> None:
    """Add each change to its (already locked) balance row, all rows in one UPDATE."""
    if not moves:
        return
    params: dict[str, object] = {"now": now, "ids": [pk for pk, _ in moves]}
    for bucket in _BUCKETS:
        params[bucket] = [change.get(bucket, _ZERO) for _, change in moves]
    prepared_cursor().execute(sql.BALANCES_MOVE, params, prepare=True)


# ---------------------------------------------------------------------------------------------
# Top-level services: one durable transaction each
# ---------------------------------------------------------------------------------------------

AccountPolicy = Callable[[dict[int, Account]], None]


def _customer_ids(accounts: Iterable[Account]) -> list[int]:
    return [account.pk for account in accounts if account.kind == Account.Kind.CUSTOMER]


def _post_locked(
    *, spec: EntrySpec, lock: Sequence[Account], policy: AccountPolicy | None = None
) -> JournalEntry:
    """Lock the customer accounts, replay a used key, apply the policy, then post."""
    ids = _customer_ids(lock)
    locked = accounts_lock(account_ids=ids)
    missing = set(ids) - set(locked)
    if missing:
        raise UnknownAccount(f"no account with id {', '.join(map(str, sorted(missing)))}")
    replay = _replayed([spec])
    if replay:
        return replay[0]
    if policy is not None:
        policy(locked)
    return ledger_post(entries=[spec])[0]


def _refuse_frozen(account: Account, action: str) -> AccountPolicy:
    def policy(locked: dict[int, Account]) -> None:
        if account.pk in locked and locked[account.pk].is_frozen:
            raise AccountFrozen(f"{_account_label(locked[account.pk])} is frozen: cannot {action}")

    return policy


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a single-account movement takes money from and puts it, and who may not do it.

    `outside` is "in" for money coming from the `external` account, "out" for money leaving to
    it, None for a move between two buckets of the account itself.
    """

    kind: EntryKind
    source_bucket: Bucket
    destination_bucket: Bucket
    outside: str | None = None
    refused_when_frozen: str | None = None  # the action a frozen account may not take


DEPOSIT = Flow(EntryKind.DEPOSIT, Bucket.AVAILABLE, Bucket.AVAILABLE, outside="in")
WITHDRAWAL = Flow(
    EntryKind.WITHDRAWAL,
    Bucket.AVAILABLE,
    Bucket.AVAILABLE,
    outside="out",
    refused_when_frozen="withdraw",
)
HOLD = Flow(EntryKind.HOLD, Bucket.AVAILABLE, Bucket.HELD, refused_when_frozen="hold funds")
RELEASE = Flow(EntryKind.RELEASE, Bucket.HELD, Bucket.AVAILABLE)


def flow_legs(
    flow: Flow,
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    external: Account | None = None,
) -> tuple[Leg, Leg]:
    """The two legs of one `Flow` moving a positive `amount` for `account`: out of the flow's
    source bucket, into its destination bucket.

    Pure: no look-up and no validation (`flow_entry` does both; `ledger_post` validates every
    entry it posts). A flow from or to outside (`Flow.outside`) needs the `external` account.
    """
    source = destination = account
    if flow.outside is not None:
        if external is None:
            raise InvalidEntry(f"a {flow.kind} flow needs the external account")
        if flow.outside == "in":
            source = external
        else:
            destination = external
    return (
        Leg(source, asset, flow.source_bucket, -amount),
        Leg(destination, asset, flow.destination_bucket, amount),
    )


def flow_entry(
    flow: Flow,
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str | None = None,
    memo: str = "",
) -> EntrySpec:
    """The entry of one `Flow` for `account` (see `movement_entry` for what it raises)."""
    external = None
    if flow.outside is not None:
        external = platform_account_open(kind=Account.Kind.EXTERNAL)
    resolved = asset_resolve(asset)
    exact = amount_validate(amount=amount, asset=resolved)
    legs = flow_legs(flow, account=account, asset=resolved, amount=exact, external=external)
    return _movement_validate(flow.kind, legs, reference, idempotency_key, memo)


def _post_flow(flow: Flow, *, account: Account, **request: Any) -> JournalEntry:
    """Post one `Flow` under the account's lock, refusing a frozen account where it must."""
    spec = flow_entry(flow, account=account, **request)
    action = flow.refused_when_frozen
    policy = None if action is None else _refuse_frozen(account, action)
    return _post_locked(spec=spec, lock=[account], policy=policy)


@transaction.atomic(durable=True)
def deposit(
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str,
    memo: str = "",
) -> JournalEntry:
    """Credit money from outside to the account's available balance.

    A frozen account may still receive a deposit (it keeps its money). Raises InvalidAmount,
    UnknownAsset, UnknownAccount, InvalidEntry or IdempotencyConflict.
    """
    request = {"reference": reference, "idempotency_key": idempotency_key, "memo": memo}
    return _post_flow(DEPOSIT, account=account, asset=asset, amount=amount, **request)


@transaction.atomic(durable=True)
def withdraw(
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str,
    memo: str = "",
) -> JournalEntry:
    """Pay money out of the account's available balance (never from held or pending).

    Only settled funds leave: the refusal of more than is available says how much is held
    for orders and how much is pending settlement. Raises AccountFrozen, InsufficientFunds,
    InvalidAmount, UnknownAsset, UnknownAccount, InvalidEntry or IdempotencyConflict.
    """
    spec = flow_entry(
        WITHDRAWAL,
        account=account,
        asset=asset,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        memo=memo,
    )
    out = spec.legs[0]  # out of the account's available (the flow's source)
    refuse_frozen = _refuse_frozen(account, "withdraw")

    def policy(locked: dict[int, Account]) -> None:
        refuse_frozen(locked)
        balance = Balance.objects.filter(account_id=account.pk, asset=out.asset).first()
        available, held, pending = (
            (balance.available, balance.held, balance.pending) if balance else (_ZERO,) * 3
        )
        if available < -out.amount:
            unsettled = (
                f"{amount_format(pending, out.asset)} more is pending settlement "
                "(withdrawable once its trades settle)"
                if pending
                else "nothing is pending settlement"
            )
            on_orders = (
                f"; {amount_format(held, out.asset)} is held for open orders" if held else ""
            )
            raise InsufficientFunds(
                f"{_account_label(locked.get(account.pk, account))} has "
                f"{amount_format(available, out.asset)} available, "
                f"{amount_format(-out.amount, out.asset)} needed; {unsettled}{on_orders}"
            )

    return _post_locked(spec=spec, lock=[account], policy=policy)


@transaction.atomic(durable=True)
def hold(
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str,
    memo: str = "",
) -> JournalEntry:
    """Reserve part of the available balance for an open order (available → held).

    Raises AccountFrozen, InsufficientFunds, InvalidAmount, UnknownAsset, UnknownAccount,
    InvalidEntry or IdempotencyConflict.
    """
    return funds_hold(
        account=account,
        asset=asset,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        memo=memo,
    )


def funds_hold(
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str | None = None,
    memo: str = "",
) -> JournalEntry:
    """`hold` inside the caller's transaction (an order's hold, written with the order).

    The one way to hold funds from Python: the account is locked and a frozen account is
    refused (AccountFrozen), as for every path that holds or moves its funds.
    """
    request = {"reference": reference, "idempotency_key": idempotency_key, "memo": memo}
    return _post_flow(HOLD, account=account, asset=asset, amount=amount, **request)


@transaction.atomic(durable=True)
def release(
    *,
    account: Account,
    asset: Asset | str,
    amount: Decimal,
    reference: str,
    idempotency_key: str,
    memo: str = "",
) -> JournalEntry:
    """Give held funds back to the available balance (held → available).

    Allowed on a frozen account, so its orders can still be canceled. Raises
    InsufficientFunds (less held than asked), InvalidAmount, UnknownAsset, UnknownAccount,
    InvalidEntry or IdempotencyConflict.
    """
    request = {"reference": reference, "idempotency_key": idempotency_key, "memo": memo}
    return _post_flow(RELEASE, account=account, asset=asset, amount=amount, **request)


@transaction.atomic(durable=True)
def transfer(
    *,
    source: Account,
    source_bucket: Bucket,
    destination: Account,
    destination_bucket: Bucket,
    asset: Asset | str,
    amount: Decimal,
    kind: EntryKind,
    reference: str,
    idempotency_key: str,
    memo: str = "",
) -> JournalEntry:
    """Move an amount from one (account, bucket) to another: the primitive of trades and fees.

    A frozen account's available balance may not leave it for another account (that would be
    a withdrawal by another name); its held and pending funds still move, so resting orders
    fill and trades settle. Raises AccountFrozen, InsufficientFunds, InvalidAmount,
    UnknownAsset, UnknownAccount, InvalidEntry or IdempotencyConflict.
    """
    spec = movement_entry(
        kind=kind,
        source=source,
        source_bucket=source_bucket,
        destination=destination,
        destination_bucket=destination_bucket,
        asset=asset,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
        memo=memo,
    )

    def policy(locked: dict[int, Account]) -> None:
        leaving = source.pk != destination.pk and source_bucket == Bucket.AVAILABLE
        if leaving and source.pk in locked and locked[source.pk].is_frozen:
            raise AccountFrozen(
                f"{_account_label(locked[source.pk])} is frozen: its available funds "
                "cannot leave it"
            )

    return _post_locked(spec=spec, lock=[source, destination], policy=policy)


@transaction.atomic(durable=True)
def user_signup(*, username: str, email: str, password: str) -> User:
    """Create a user and their trading account together."""
    user = get_user_model().objects.create_user(username=username, email=email, password=password)
    account_open(user=user)
    return user


def _status_set(*, account: Account, status: Account.Status, reason: str) -> Account:
    if account.pk is None:
        raise UnknownAccount("the account does not exist")
    locked = accounts_lock(account_ids=[account.pk]).get(account.pk)
    if locked is None:
        raise UnknownAccount(f"no account with id {account.pk}")
    if locked.is_platform:
        raise LedgerError(f"{_account_label(locked)} is a platform account and is never frozen")
    if locked.status != status:
        locked.status = status
        locked.status_reason = reason.strip()[:255]
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_reason", "status_changed_at"])
    return locked


@transaction.atomic(durable=True)
def account_freeze(*, account: Account, reason: str = "") -> Account:
    """Freeze an account: it keeps its money but may hold (order) and withdraw nothing.

    Freezing a frozen account changes nothing. Raises UnknownAccount, or LedgerError for a
    platform account.
    """
    return _status_set(account=account, status=Account.Status.FROZEN, reason=reason)


@transaction.atomic(durable=True)
def account_unfreeze(*, account: Account, reason: str = "") -> Account:
    """Make a frozen account active again. Raises UnknownAccount or LedgerError."""
    return _status_set(account=account, status=Account.Status.ACTIVE, reason=reason)
