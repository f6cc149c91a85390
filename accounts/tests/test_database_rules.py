"""PostgreSQL itself refuses what would break the ledger, whatever the Python code does."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from accounts import services
from accounts.models import Account, Balance, JournalEntry, Posting
from accounts.tests.helpers import assert_ledger_sound


def insert_entry(cursor, *postings: tuple[int, int, str, str]) -> int:
    cursor.execute(
        "INSERT INTO accounts_journalentry (kind, reference, memo, created_at) "
        "VALUES ('adjustment', 'raw sql', '', now()) RETURNING id"
    )
    entry_id = cursor.fetchone()[0]
    for account_id, asset_id, bucket, amount in postings:
        cursor.execute(
            "INSERT INTO accounts_posting (entry_id, account_id, asset_id, bucket, amount) "
            "VALUES (%s, %s, %s, %s, %s)",
            [entry_id, account_id, asset_id, bucket, Decimal(amount)],
        )
    return entry_id


@pytest.mark.django_db(transaction=True)
def test_unbalanced_entry_written_in_sql_is_rejected_at_commit(account, usd):
    with (
        pytest.raises(IntegrityError, match="does not balance: USD postings sum to 5"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_entry(cursor, (account.pk, usd.pk, "available", "5"))

    assert not JournalEntry.objects.exists()
    assert not Posting.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_entry_balanced_in_total_but_not_per_asset_is_rejected(account, usd, btc):
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)

    with (
        pytest.raises(IntegrityError, match="does not balance"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_entry(
            cursor,
            (account.pk, usd.pk, "available", "5"),
            (external.pk, btc.pk, "available", "-5"),
        )

    assert not Posting.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_entry_without_postings_is_rejected_at_commit():
    with (
        pytest.raises(IntegrityError, match="has no postings"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_entry(cursor)

    assert not JournalEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_balanced_entry_written_in_sql_commits(account, usd):
    # The trigger only refuses unbalanced entries: this proves the tests above can pass.
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)

    with transaction.atomic(), connection.cursor() as cursor:
        insert_entry(
            cursor,
            (account.pk, usd.pk, "held", "5"),
            (external.pk, usd.pk, "available", "-2"),
            (external.pk, usd.pk, "pending", "-3"),
        )

    assert Posting.objects.count() == 3


@pytest.mark.django_db
def test_unbalanced_entry_is_rejected_when_constraints_are_checked_early(account, usd):
    with transaction.atomic(), connection.cursor() as cursor:
        insert_entry(cursor, (account.pk, usd.pk, "available", "-1"))
        with pytest.raises(IntegrityError, match="does not balance"):
            cursor.execute("SET CONSTRAINTS posting_entry_balanced IMMEDIATE")
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_posting_more_precise_than_its_asset_is_rejected(account, usd):
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)

    with (
        pytest.raises(IntegrityError, match="more than 2 decimal places"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_entry(
            cursor,
            (account.pk, usd.pk, "available", "0.001"),
            (external.pk, usd.pk, "available", "-0.001"),
        )


@pytest.mark.django_db
def test_zero_posting_is_rejected(account, usd):
    with (
        pytest.raises(IntegrityError, match="posting_amount_nonzero"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        insert_entry(cursor, (account.pk, usd.pk, "available", "0"))


@pytest.fixture
def posted(make_account, usd):
    account = make_account(funds={usd: "10"})
    return account, JournalEntry.objects.get(postings__account=account)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE accounts_posting SET amount = amount * 2",
        "DELETE FROM accounts_posting",
        "UPDATE accounts_journalentry SET reference = 'rewritten'",
        "DELETE FROM accounts_journalentry",
        "UPDATE accounts_idempotencykey SET request_hash = 'x'",
        "DELETE FROM accounts_idempotencykey",
    ],
)
def test_ledger_rows_are_append_only(posted, statement):
    with (
        pytest.raises(IntegrityError, match="is append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)

    assert_ledger_sound()


@pytest.mark.django_db
@pytest.mark.parametrize("bucket", ["available", "held", "pending"])
def test_customer_balance_cannot_go_negative_even_in_sql(posted, bucket):
    account, _ = posted

    with (
        pytest.raises(IntegrityError, match=f"balance_{bucket}_non_negative"),
        transaction.atomic(),
    ):
        Balance.objects.filter(account=account).update(**{bucket: Decimal("-0.01")})


@pytest.mark.django_db
def test_external_account_is_the_one_that_goes_negative(posted, usd):
    external = Balance.objects.get(account__kind=Account.Kind.EXTERNAL, asset=usd)

    assert external.available == Decimal("-10")


@pytest.mark.django_db
def test_balance_cannot_pretend_to_be_external(posted):
    account, _ = posted

    with pytest.raises(IntegrityError, match="balance_account_kind_matches"), transaction.atomic():
        Balance.objects.filter(account=account).update(account_kind="external")
