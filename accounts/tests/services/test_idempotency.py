from decimal import Decimal

import pytest

from accounts import services
from accounts.exceptions import IdempotencyConflict
from accounts.models import JournalEntry
from testing.helpers import balance_of, ledger_state

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("service", [services.deposit, services.withdraw, services.hold])
def test_repeating_a_call_with_its_key_changes_nothing_and_returns_the_first_entry(
    make_account, usd, service
):
    account = make_account(funds={usd: "100"})
    call = dict(
        account=account, asset=usd, amount=Decimal("5"), reference="r", idempotency_key="same-key"
    )
    first = service(**call)
    after_first = ledger_state()

    again = service(**call)

    assert again.pk == first.pk
    assert ledger_state() == after_first


def test_same_key_with_different_arguments_is_a_conflict(account, usd):
    services.deposit(
        account=account, asset=usd, amount=Decimal("5"), reference="r", idempotency_key="k1"
    )
    before = ledger_state()

    with pytest.raises(IdempotencyConflict, match="'k1' was already used") as error:
        services.deposit(
            account=account, asset=usd, amount=Decimal("6"), reference="r", idempotency_key="k1"
        )

    assert error.value.code == "idempotency_conflict"
    assert ledger_state() == before


def test_same_key_for_another_service_is_a_conflict(make_account, usd):
    account = make_account(funds={usd: "10"})
    services.hold(
        account=account, asset=usd, amount=Decimal("5"), reference="r", idempotency_key="k2"
    )

    with pytest.raises(IdempotencyConflict):
        services.withdraw(
            account=account, asset=usd, amount=Decimal("5"), reference="r", idempotency_key="k2"
        )


def test_an_equal_amount_written_differently_is_the_same_call(account, usd):
    first = services.deposit(
        account=account, asset=usd, amount=Decimal("5"), reference="r", idempotency_key="k3"
    )

    again = services.deposit(
        account=account, asset=usd, amount=Decimal("5.00"), reference="r", idempotency_key="k3"
    )

    assert again.pk == first.pk
    assert balance_of(account, usd)[0] == Decimal("5.00")


def test_a_replayed_withdrawal_succeeds_after_the_account_is_frozen(make_account, usd):
    account = make_account(funds={usd: "10"})
    first = services.withdraw(
        account=account, asset=usd, amount=Decimal("4"), reference="r", idempotency_key="k4"
    )
    services.account_freeze(account=account)

    again = services.withdraw(
        account=account, asset=usd, amount=Decimal("4"), reference="r", idempotency_key="k4"
    )

    assert again.pk == first.pk
    assert JournalEntry.objects.filter(kind="withdrawal").count() == 1


def test_a_refused_call_does_not_use_up_its_key(account, usd):
    with pytest.raises(services.InsufficientFunds):
        services.withdraw(
            account=account, asset=usd, amount=Decimal("4"), reference="r", idempotency_key="k5"
        )
    services.deposit(
        account=account, asset=usd, amount=Decimal("4"), reference="r", idempotency_key="k6"
    )

    services.withdraw(
        account=account, asset=usd, amount=Decimal("4"), reference="r", idempotency_key="k5"
    )

    assert balance_of(account, usd)[0] == 0
