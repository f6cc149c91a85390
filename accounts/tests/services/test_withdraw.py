from decimal import Decimal

import pytest

from accounts import services
from accounts.exceptions import AccountFrozen, InsufficientFunds, InvalidAmount, UnknownAsset
from accounts.models import Bucket, EntryKind
from testing.helpers import assert_ledger_sound, balance_of, ledger_state, new_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded(make_account, usd):
    return make_account(funds={usd: "100.00"})


def test_withdraw_debits_available(funded, usd):
    entry = services.withdraw(
        account=funded,
        asset=usd,
        amount=Decimal("30.25"),
        reference="payout 1",
        idempotency_key=new_key(),
    )

    assert entry.kind == EntryKind.WITHDRAWAL
    assert balance_of(funded, usd) == (Decimal("69.75"), 0, 0)
    assert_ledger_sound()


def test_withdraw_everything(funded, usd):
    services.withdraw(
        account=funded, asset=usd, amount=Decimal("100"), reference="r", idempotency_key=new_key()
    )

    assert balance_of(funded, usd) == (0, 0, 0)


def test_withdraw_more_than_available_is_refused(funded, usd):
    before = ledger_state()

    with pytest.raises(InsufficientFunds, match=r"100\.00 USD available, 100\.01 USD needed") as e:
        services.withdraw(
            account=funded,
            asset=usd,
            amount=Decimal("100.01"),
            reference="r",
            idempotency_key=new_key(),
        )

    assert e.value.code == "insufficient_funds"
    assert ledger_state() == before


def test_withdraw_never_takes_held_funds(funded, usd):
    services.hold(
        account=funded,
        asset=usd,
        amount=Decimal("80"),
        reference="order 1",
        idempotency_key=new_key(),
    )
    before = ledger_state()

    with pytest.raises(InsufficientFunds):
        services.withdraw(
            account=funded,
            asset=usd,
            amount=Decimal("50"),
            reference="r",
            idempotency_key=new_key(),
        )

    assert ledger_state() == before
    assert balance_of(funded, usd) == (Decimal("20.00"), Decimal("80.00"), 0)


def test_withdraw_never_takes_pending_funds(make_account, usd):
    # given: the only money is pending settlement (sold, not yet settled)
    buyer = make_account(funds={usd: "50"})
    seller = make_account()
    services.hold(
        account=buyer, asset=usd, amount=Decimal("50"), reference="o", idempotency_key=new_key()
    )
    services.transfer(
        source=buyer,
        source_bucket=Bucket.HELD,
        destination=seller,
        destination_bucket=Bucket.PENDING,
        asset=usd,
        amount=Decimal("50"),
        kind=EntryKind.TRADE,
        reference="trade 1",
        idempotency_key=new_key(),
    )
    before = ledger_state()

    # when / then
    with pytest.raises(InsufficientFunds, match="0.00 USD available"):
        services.withdraw(
            account=seller, asset=usd, amount=Decimal("1"), reference="r", idempotency_key=new_key()
        )
    assert ledger_state() == before
    assert balance_of(seller, usd) == (0, 0, Decimal("50.00"))


def test_frozen_account_withdraws_nothing(funded, usd):
    services.account_freeze(account=funded, reason="fraud review")
    before = ledger_state()

    with pytest.raises(AccountFrozen, match="is frozen: cannot withdraw") as error:
        services.withdraw(
            account=funded, asset=usd, amount=Decimal("1"), reference="r", idempotency_key=new_key()
        )

    assert error.value.code == "account_frozen"
    assert ledger_state() == before
    assert balance_of(funded, usd) == (Decimal("100.00"), 0, 0)


def test_unfrozen_account_withdraws_again(funded, usd):
    services.account_freeze(account=funded)
    services.account_unfreeze(account=funded)

    services.withdraw(
        account=funded, asset=usd, amount=Decimal("1"), reference="r", idempotency_key=new_key()
    )

    assert balance_of(funded, usd)[0] == Decimal("99.00")


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-1"), Decimal("0.001"), 0.5])
def test_withdraw_rejects_bad_amounts(funded, usd, amount):
    before = ledger_state()

    with pytest.raises(InvalidAmount):
        services.withdraw(
            account=funded, asset=usd, amount=amount, reference="r", idempotency_key=new_key()
        )

    assert ledger_state() == before


def test_withdraw_rejects_unknown_asset(funded):
    before = ledger_state()

    with pytest.raises(UnknownAsset):
        services.withdraw(
            account=funded,
            asset="XYZ",
            amount=Decimal("1"),
            reference="r",
            idempotency_key=new_key(),
        )

    assert ledger_state() == before


def test_withdraw_of_an_asset_never_held(funded, btc):
    with pytest.raises(InsufficientFunds, match="0.00000000 BTC available"):
        services.withdraw(
            account=funded,
            asset=btc,
            amount=Decimal("0.1"),
            reference="r",
            idempotency_key=new_key(),
        )
