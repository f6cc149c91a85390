from decimal import Decimal

import pytest

from accounts import services
from accounts.exceptions import InvalidAmount, UnknownAccount, UnknownAsset
from accounts.models import Account, Bucket, EntryKind
from testing.helpers import assert_ledger_sound, balance_of, ledger_state, new_key

pytestmark = pytest.mark.django_db


def test_deposit_credits_available_from_external(account, usd):
    # when
    entry = services.deposit(
        account=account,
        asset=usd,
        amount=Decimal("1250.50"),
        reference="wire 77",
        idempotency_key=new_key(),
    )

    # then
    assert balance_of(account, usd) == (Decimal("1250.50"), 0, 0)
    assert entry.kind == EntryKind.DEPOSIT
    assert entry.reference == "wire 77"
    legs = sorted((p.account.kind, p.bucket, p.amount) for p in entry.postings.all())
    assert legs == [
        (Account.Kind.CUSTOMER, Bucket.AVAILABLE, Decimal("1250.50")),
        (Account.Kind.EXTERNAL, Bucket.AVAILABLE, Decimal("-1250.50")),
    ]
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)
    assert balance_of(external, usd)[0] == Decimal("-1250.50")
    assert_ledger_sound()


def test_deposit_by_asset_code(account, btc):
    services.deposit(
        account=account,
        asset="btc",
        amount=Decimal("0.00000001"),
        reference="r",
        idempotency_key=new_key(),
    )

    assert balance_of(account, btc)[0] == Decimal("0.00000001")


def test_deposit_to_frozen_account_is_allowed(account, usd):
    services.account_freeze(account=account, reason="kyc review")

    services.deposit(
        account=account, asset=usd, amount=Decimal("10"), reference="r", idempotency_key=new_key()
    )

    assert balance_of(account, usd)[0] == Decimal("10.00")


def test_deposit_accepts_trailing_zeros_within_precision(account, usd):
    services.deposit(
        account=account,
        asset=usd,
        amount=Decimal("1.5000"),
        reference="r",
        idempotency_key=new_key(),
    )

    assert balance_of(account, usd)[0] == Decimal("1.50")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Decimal("0"), "must not be zero"),
        (Decimal("-5"), "must be positive"),
        (Decimal("1.001"), "USD allows 2 decimal places"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (Decimal("1e20"), "too large"),
        (1.5, "not float"),
        ("10", "not str"),
        (True, "not bool"),
    ],
)
def test_deposit_rejects_bad_amounts_and_changes_nothing(account, usd, amount, message):
    before = ledger_state()

    with pytest.raises(InvalidAmount, match=message) as error:
        services.deposit(
            account=account, asset=usd, amount=amount, reference="r", idempotency_key=new_key()
        )

    assert error.value.code == "invalid_amount"
    assert ledger_state() == before


def test_deposit_rejects_unknown_asset(account, usd):
    before = ledger_state()

    with pytest.raises(UnknownAsset, match="'DOGE'") as error:
        services.deposit(
            account=account,
            asset="DOGE",
            amount=Decimal("1"),
            reference="r",
            idempotency_key=new_key(),
        )

    assert error.value.code == "unknown_asset"
    assert ledger_state() == before


def test_deposit_rejects_an_unsaved_account(usd):
    with pytest.raises(UnknownAccount):
        services.deposit(
            account=Account(kind=Account.Kind.CUSTOMER),
            asset=usd,
            amount=Decimal("1"),
            reference="r",
            idempotency_key=new_key(),
        )


def test_deposit_requires_a_reference(account, usd):
    before = ledger_state()

    with pytest.raises(services.InvalidEntry, match="reference is required"):
        services.deposit(
            account=account,
            asset=usd,
            amount=Decimal("1"),
            reference="  ",
            idempotency_key=new_key(),
        )

    assert ledger_state() == before
