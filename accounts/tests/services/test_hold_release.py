from decimal import Decimal

import pytest

from accounts import services
from accounts.exceptions import AccountFrozen, InsufficientFunds, InvalidAmount, UnknownAsset
from accounts.models import Bucket, EntryKind
from testing.helpers import assert_ledger_sound, balance_of, ledger_state, new_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded(make_account, btc):
    return make_account(funds={btc: "2"})


def test_hold_moves_available_to_held_in_one_balanced_entry(funded, btc):
    entry = services.hold(
        account=funded,
        asset=btc,
        amount=Decimal("0.5"),
        reference="order 9",
        idempotency_key=new_key(),
    )

    assert entry.kind == EntryKind.HOLD
    legs = sorted((p.account_id, p.bucket, p.amount) for p in entry.postings.all())
    assert legs == [
        (funded.pk, Bucket.AVAILABLE, Decimal("-0.5")),
        (funded.pk, Bucket.HELD, Decimal("0.5")),
    ]
    assert balance_of(funded, btc) == (Decimal("1.5"), Decimal("0.5"), 0)
    assert_ledger_sound()


def test_hold_more_than_available_is_refused(funded, btc):
    before = ledger_state()

    with pytest.raises(InsufficientFunds, match="2.00000000 BTC available"):
        services.hold(
            account=funded,
            asset=btc,
            amount=Decimal("2.00000001"),
            reference="o",
            idempotency_key=new_key(),
        )

    assert ledger_state() == before


def test_frozen_account_cannot_hold(funded, btc):
    services.account_freeze(account=funded)
    before = ledger_state()

    with pytest.raises(AccountFrozen, match="cannot hold funds"):
        services.hold(
            account=funded, asset=btc, amount=Decimal("1"), reference="o", idempotency_key=new_key()
        )

    assert ledger_state() == before


def test_release_gives_held_back(funded, btc):
    services.hold(
        account=funded, asset=btc, amount=Decimal("1"), reference="o", idempotency_key=new_key()
    )

    entry = services.release(
        account=funded,
        asset=btc,
        amount=Decimal("0.25"),
        reference="o canceled",
        idempotency_key=new_key(),
    )

    assert entry.kind == EntryKind.RELEASE
    assert balance_of(funded, btc) == (Decimal("1.25"), Decimal("0.75"), 0)
    assert_ledger_sound()


def test_frozen_account_can_still_release(funded, btc):
    services.hold(
        account=funded, asset=btc, amount=Decimal("1"), reference="o", idempotency_key=new_key()
    )
    services.account_freeze(account=funded)

    services.release(
        account=funded, asset=btc, amount=Decimal("1"), reference="o", idempotency_key=new_key()
    )

    assert balance_of(funded, btc) == (Decimal("2"), 0, 0)


def test_release_more_than_held_is_refused(funded, btc):
    services.hold(
        account=funded, asset=btc, amount=Decimal("1"), reference="o", idempotency_key=new_key()
    )
    before = ledger_state()

    with pytest.raises(InsufficientFunds, match="1.00000000 BTC held, 1.10000000 BTC needed"):
        services.release(
            account=funded,
            asset=btc,
            amount=Decimal("1.1"),
            reference="o",
            idempotency_key=new_key(),
        )

    assert ledger_state() == before


@pytest.mark.parametrize("service", [services.hold, services.release])
@pytest.mark.parametrize(
    "amount", [Decimal("0"), Decimal("-0.1"), Decimal("0.000000001"), Decimal("1e-9"), 0.1]
)
def test_hold_and_release_reject_bad_amounts(funded, btc, service, amount):
    before = ledger_state()

    with pytest.raises(InvalidAmount):
        service(account=funded, asset=btc, amount=amount, reference="o", idempotency_key=new_key())

    assert ledger_state() == before


@pytest.mark.parametrize("service", [services.hold, services.release])
def test_hold_and_release_reject_unknown_asset(funded, service):
    with pytest.raises(UnknownAsset):
        service(
            account=funded,
            asset="NOPE",
            amount=Decimal("1"),
            reference="o",
            idempotency_key=new_key(),
        )
