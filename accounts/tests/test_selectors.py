import datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts import selectors, services
from accounts.models import Bucket, EntryKind
from testing.helpers import new_key

pytestmark = pytest.mark.django_db


def test_balance_list_shows_every_asset_at_its_precision(make_account, usd, btc, aapl):
    account = make_account(funds={usd: "12.5", btc: "0.1"})

    rows = selectors.balance_list(account=account, include_every_asset=True)

    shown = [(row.asset.code, str(row.available), str(row.total)) for row in rows]
    assert shown == [
        ("AAPL", "0", "0"),
        ("BTC", "0.10000000", "0.10000000"),
        ("USD", "12.50", "12.50"),
    ]
    assert [row.asset.code for row in selectors.balance_list(account=account)] == ["BTC", "USD"]


def test_ledger_history_is_paginated_newest_first(make_account, usd):
    account = make_account(funds={usd: "100"})
    for n in range(4):
        services.hold(
            account=account,
            asset=usd,
            amount=Decimal(n + 1),
            reference=f"o{n}",
            idempotency_key=new_key(),
        )

    first = selectors.ledger_history(account=account, page=1, page_size=3)
    last = selectors.ledger_history(account=account, page=3, page_size=3)

    assert first.paginator.count == 9  # one deposit leg, two legs per hold
    assert [p.entry.reference for p in first] == ["o3", "o3", "o2"]
    assert [p.entry.kind for p in last] == [EntryKind.HOLD, EntryKind.HOLD, EntryKind.DEPOSIT]
    assert selectors.ledger_history(account=account, page="nonsense", page_size=3).number == 1


def test_statement_has_opening_movements_and_closing(make_account, usd, btc):
    account = make_account(funds={usd: "100"})
    start = timezone.now()
    services.hold(
        account=account, asset=usd, amount=Decimal("30"), reference="o1", idempotency_key=new_key()
    )
    services.deposit(
        account=account, asset=btc, amount=Decimal("1"), reference="d", idempotency_key=new_key()
    )
    end = timezone.now()
    services.withdraw(
        account=account, asset=usd, amount=Decimal("5"), reference="late", idempotency_key=new_key()
    )

    statement = selectors.account_statement(account=account, start=start, end=end)

    by_code = {s.asset.code: s for s in statement.assets}
    assert list(by_code) == ["BTC", "USD"]
    usd_part = by_code["USD"]
    assert (usd_part.opening.available, usd_part.opening.held) == (Decimal("100.00"), 0)
    assert [(line.kind, line.bucket, line.amount) for line in usd_part.lines] == [
        (EntryKind.HOLD, Bucket.AVAILABLE, Decimal("-30.00")),
        (EntryKind.HOLD, Bucket.HELD, Decimal("30.00")),
    ]
    assert (usd_part.closing.available, usd_part.closing.held) == (Decimal("70.00"), Decimal("30"))
    assert by_code["BTC"].opening.total == 0
    assert by_code["BTC"].closing.available == Decimal("1")


def test_statement_refuses_naive_or_reversed_dates(account):
    now = timezone.now()
    with pytest.raises(ValueError, match="timezone-aware"):
        selectors.account_statement(
            account=account,
            start=datetime.datetime(2026, 1, 1),  # noqa: DTZ001
            end=now,
        )
    with pytest.raises(ValueError, match="ends before"):
        selectors.account_statement(
            account=account, start=now, end=now - datetime.timedelta(days=1)
        )


def test_ledger_verify_reports_a_balance_that_drifted_from_its_postings(make_account, usd):
    account = make_account("drifter", funds={usd: "10"})
    assert selectors.ledger_verify() == []

    with connection.cursor() as cursor:  # a bug (or a person) edits a balance directly
        cursor.execute(
            "UPDATE accounts_balance SET held = held + 1 WHERE account_id = %s", [account.pk]
        )

    breaks = {(b.invariant, b.detail) for b in selectors.ledger_verify()}
    assert (
        "balance_equals_postings",
        f"account #{account.pk} (drifter) USD: balance available/held/pending is "
        "10.00/1.00/0.00 but its postings sum to 10.00/0.00/0.00",
    ) in breaks
    assert ("asset_sums_to_zero", "USD: balances over all accounts sum to 1.00, not zero") in breaks


def test_ledger_verify_reports_an_unbalanced_entry_the_database_would_refuse(account, usd):
    # The database refuses it at the end of the statement; with its rules switched off (in a
    # transaction that is rolled back), the check must still find it on its own.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE accounts_posting DISABLE TRIGGER posting_rules")
        cursor.execute(
            "ALTER TABLE accounts_journalentry DISABLE TRIGGER journal_entry_has_postings"
        )
        cursor.execute(
            "INSERT INTO accounts_journalentry (kind, reference, memo, created_at) "
            "VALUES ('adjustment', 'x', '', now()) RETURNING id"
        )
        entry_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO accounts_posting (entry_id, account_id, asset_id, bucket, amount) "
            "VALUES (%s, %s, %s, 'available', 3)",
            [entry_id, account.pk, usd.pk],
        )

        invariants = {b.invariant for b in selectors.ledger_verify()}

        transaction.set_rollback(True)  # never let the bad entry reach a commit
    assert {"entry_balanced", "asset_sums_to_zero", "balance_equals_postings"} <= invariants
