"""PostgreSQL itself refuses what would break the ledger, whatever the Python code does."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from accounts import services
from accounts.models import Account, Balance, JournalEntry, Posting
from testing.helpers import assert_ledger_sound


def insert_entry(cursor, *postings: tuple[int, int, str, str]) -> int:
    """An entry and its postings in one statement, as the ledger's rules require."""
    cursor.execute(
        "WITH entry AS ("
        "  INSERT INTO accounts_journalentry (kind, reference, memo, created_at)"
        "  VALUES ('adjustment', 'raw sql', '', now()) RETURNING id"
        "), postings AS ("
        "  INSERT INTO accounts_posting (entry_id, account_id, asset_id, bucket, amount)"
        "  SELECT entry.id, v.account_id, v.asset_id, v.bucket, v.amount FROM entry,"
        "         unnest(%s::bigint[], %s::bigint[], %s::text[], %s::numeric[])"
        "         AS v(account_id, asset_id, bucket, amount)"
        ") SELECT id FROM entry",
        [
            [p[0] for p in postings],
            [p[1] for p in postings],
            [p[2] for p in postings],
            [Decimal(p[3]) for p in postings],
        ],
    )
    return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_unbalanced_entry_written_in_sql_is_rejected(account, usd):
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


@pytest.mark.django_db(transaction=True)
def test_entry_written_over_two_statements_is_rejected(account, usd):
    # The rules hold at the end of each statement: an entry and its postings come together.
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)

    with (
        pytest.raises(IntegrityError, match="has no postings"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO accounts_journalentry (kind, reference, memo, created_at) "
            "VALUES ('adjustment', 'raw sql', '', now())"
        )

    assert not JournalEntry.objects.exists()
    entry_id = insert_entry(
        connection.cursor(),
        (account.pk, usd.pk, "available", "5"),
        (external.pk, usd.pk, "available", "-5"),
    )
    with (
        pytest.raises(IntegrityError, match=f"journal entry {entry_id} does not balance"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # A posting added later to a balanced entry, even in the same transaction.
        cursor.execute(
            "INSERT INTO accounts_posting (entry_id, account_id, asset_id, bucket, amount) "
            "VALUES (%s, %s, %s, 'available', 1)",
            [entry_id, account.pk, usd.pk],
        )

    assert Posting.objects.filter(entry_id=entry_id).count() == 2


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
