"""Threads, each with its own database connection, race the services on the same rows."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.management import call_command

from accounts import services
from accounts.exceptions import InsufficientFunds
from accounts.models import EntryKind, JournalEntry
from testing.helpers import assert_ledger_sound, balance_of, new_key
from testing.helpers import race as race_outcomes

THREADS = 12
CALLS_PER_THREAD = 15


def race(threads: int, work: Callable[[int], None]) -> list[BaseException]:
    """What any of `threads` racing calls of work(n) raised."""
    outcomes = race_outcomes(threads, work)
    return [outcome for outcome in outcomes if isinstance(outcome, BaseException)]


@pytest.mark.django_db(transaction=True)
def test_racing_withdrawals_and_holds_never_double_spend(make_account, usd):
    # given: 1,000.00 USD and 180 calls asking for about 1,800 of it in total
    account = make_account(funds={usd: "1000.00"})
    done: list[tuple[str, Decimal]] = []
    refused: list[Decimal] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        rng = random.Random(n)
        for _ in range(CALLS_PER_THREAD):
            service = rng.choice([services.withdraw, services.hold])
            amount = Decimal(rng.randint(500, 1500)) / 100
            try:
                service(
                    account=account,
                    asset=usd,
                    amount=amount,
                    reference=f"thread {n}",
                    idempotency_key=new_key(),
                )
            except InsufficientFunds:
                with lock:
                    refused.append(amount)
            else:
                with lock:
                    done.append((service.__name__, amount))

    # when
    errors = race(THREADS, work)

    # then
    assert errors == []
    assert refused, "the race should have run out of money"
    withdrawn = sum(amount for name, amount in done if name == "withdraw")
    held = sum(amount for name, amount in done if name == "hold")
    assert withdrawn + held <= Decimal("1000.00")
    available, held_now, pending = balance_of(account, usd)
    assert (available, held_now, pending) == (Decimal("1000.00") - withdrawn - held, held, 0)
    assert available >= 0
    # Money only ever left the bucket, so each refusal saw at least what is left now: every
    # one of them was right to refuse.
    assert available < min(refused)
    assert JournalEntry.objects.filter(kind=EntryKind.WITHDRAWAL).count() == sum(
        1 for name, _ in done if name == "withdraw"
    )
    assert_ledger_sound()
    call_command("ledger_check")


@pytest.mark.django_db(transaction=True)
def test_racing_calls_with_one_idempotency_key_apply_once(make_account, usd):
    account = make_account(funds={usd: "100"})
    entries: list[int] = []

    def work(n: int) -> None:
        entry = services.withdraw(
            account=account,
            asset=usd,
            amount=Decimal("60"),
            reference="payout",
            idempotency_key="one-payout",
        )
        entries.append(entry.pk)

    errors = race(8, work)

    assert errors == []
    assert len(set(entries)) == 1
    assert balance_of(account, usd)[0] == Decimal("40.00")
    assert_ledger_sound()


@pytest.mark.django_db(transaction=True)
def test_first_deposits_race_to_open_the_platform_account(make_account, usd, btc):
    # A fresh database: the external account and its balance rows are created in the race.
    accounts = [make_account() for _ in range(THREADS)]

    def work(n: int) -> None:
        for asset in (usd, btc) if n % 2 else (btc, usd):
            services.deposit(
                account=accounts[n],
                asset=asset,
                amount=Decimal("1"),
                reference="first",
                idempotency_key=new_key(),
            )

    errors = race(THREADS, work)

    assert errors == []
    for account in accounts:
        assert balance_of(account, usd)[0] == Decimal("1.00")
    assert_ledger_sound()
    call_command("ledger_check")
