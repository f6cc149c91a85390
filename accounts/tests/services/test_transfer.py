"""transfer: the primitive trades, fees and settlement are built on."""

from decimal import Decimal

import pytest

from accounts import services
from accounts.exceptions import AccountFrozen, InsufficientFunds, InvalidAmount, InvalidEntry
from accounts.models import Account, Asset, Bucket, EntryKind, JournalEntry
from testing.helpers import assert_ledger_sound, balance_of, ledger_state, new_key

pytestmark = pytest.mark.django_db


def test_trade_fee_and_settlement_through_transfer(make_account, usd, aapl):
    # given: a buyer holding dollars and a seller holding shares
    buyer = make_account(funds={usd: "1000"})
    seller = make_account(funds={aapl: "10"})
    services.hold(
        account=buyer, asset=usd, amount=Decimal("460"), reference="o1", idempotency_key=new_key()
    )
    services.hold(
        account=seller, asset=aapl, amount=Decimal("2"), reference="o2", idempotency_key=new_key()
    )
    fees = services.platform_account_open(kind=Account.Kind.FEES)

    # when: 2 AAPL trade at 229.50 with a 0.46 fee, then settle
    move = dict(kind=EntryKind.TRADE, reference="trade 1")
    services.transfer(
        source=buyer,
        source_bucket=Bucket.HELD,
        destination=seller,
        destination_bucket=Bucket.PENDING,
        asset=usd,
        amount=Decimal("459.00"),
        idempotency_key=new_key(),
        **move,
    )
    services.transfer(
        source=seller,
        source_bucket=Bucket.HELD,
        destination=buyer,
        destination_bucket=Bucket.PENDING,
        asset=aapl,
        amount=Decimal("2"),
        idempotency_key=new_key(),
        **move,
    )
    services.transfer(
        source=buyer,
        source_bucket=Bucket.HELD,
        destination=fees,
        destination_bucket=Bucket.AVAILABLE,
        asset=usd,
        amount=Decimal("0.46"),
        kind=EntryKind.FEE,
        reference="trade 1",
        idempotency_key=new_key(),
    )
    services.release(
        account=buyer, asset=usd, amount=Decimal("0.54"), reference="o1", idempotency_key=new_key()
    )

    # then: nothing of the buyer's order stays held, the proceeds are pending
    assert balance_of(buyer, usd) == (Decimal("540.54"), 0, 0)
    assert balance_of(buyer, aapl) == (0, 0, Decimal("2"))
    assert balance_of(seller, usd) == (0, 0, Decimal("459.00"))
    assert balance_of(seller, aapl) == (Decimal("8"), 0, 0)
    assert balance_of(fees, usd) == (Decimal("0.46"), 0, 0)

    # when: settlement moves pending to available
    for account, asset, amount in [(seller, usd, "459"), (buyer, aapl, "2")]:
        services.transfer(
            source=account,
            source_bucket=Bucket.PENDING,
            destination=account,
            destination_bucket=Bucket.AVAILABLE,
            asset=asset,
            amount=Decimal(amount),
            kind=EntryKind.SETTLEMENT,
            reference="settlement 2026-11-23",
            idempotency_key=new_key(),
        )

    assert balance_of(seller, usd) == (Decimal("459.00"), 0, 0)
    assert balance_of(buyer, aapl) == (Decimal("2"), 0, 0)
    assert_ledger_sound()


def move(source: Account, destination: Account, asset: Asset, **fields: object) -> JournalEntry:
    """`services.transfer` of 1 unit, available to available, as an adjustment, unless the
    test says otherwise: each test below spells out only what it changes."""
    call = {
        "source_bucket": Bucket.AVAILABLE,
        "destination_bucket": Bucket.AVAILABLE,
        "amount": Decimal("1"),
        "kind": EntryKind.ADJUSTMENT,
        "reference": "t",
    }
    return services.transfer(
        source=source,
        destination=destination,
        asset=asset,
        idempotency_key=new_key(),
        **(call | fields),
    )


def test_transfer_needs_funds_in_the_source_bucket(make_account, usd):
    source = make_account(funds={usd: "10"})
    destination = make_account()
    before = ledger_state()

    with pytest.raises(InsufficientFunds, match="0.00 USD held"):
        move(
            source,
            destination,
            usd,
            source_bucket=Bucket.HELD,
            destination_bucket=Bucket.PENDING,
            kind=EntryKind.TRADE,
        )

    assert ledger_state() == before


def test_frozen_account_available_funds_cannot_leave(make_account, usd):
    source = make_account(funds={usd: "10"})
    destination = make_account()
    services.account_freeze(account=source)
    before = ledger_state()

    with pytest.raises(AccountFrozen):
        move(source, destination, usd)

    assert ledger_state() == before


def test_frozen_account_held_funds_still_fill_and_settle(make_account, usd):
    buyer = make_account(funds={usd: "10"})
    seller = make_account()
    services.hold(
        account=buyer, asset=usd, amount=Decimal("10"), reference="o", idempotency_key=new_key()
    )
    services.account_freeze(account=buyer)

    move(
        buyer,
        seller,
        usd,
        source_bucket=Bucket.HELD,
        destination_bucket=Bucket.PENDING,
        amount=Decimal("10"),
        kind=EntryKind.TRADE,
    )

    assert balance_of(seller, usd) == (0, 0, Decimal("10.00"))


def test_transfer_to_the_same_bucket_is_refused(make_account, usd):
    account = make_account(funds={usd: "10"})

    with pytest.raises(InvalidEntry, match="same bucket"):
        move(account, account, usd)


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-3"), Decimal("0.005"), 2.0])
def test_transfer_rejects_bad_amounts(make_account, usd, amount):
    source = make_account(funds={usd: "10"})
    destination = make_account()
    before = ledger_state()

    with pytest.raises(InvalidAmount):
        move(source, destination, usd, amount=amount)

    assert ledger_state() == before


def test_fees_account_cannot_go_negative(usd):
    fees = services.platform_account_open(kind=Account.Kind.FEES)
    external = services.platform_account_open(kind=Account.Kind.EXTERNAL)

    with pytest.raises(InsufficientFunds, match="fees account"):
        move(fees, external, usd, kind=EntryKind.WITHDRAWAL)
