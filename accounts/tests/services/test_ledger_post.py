"""ledger_post: the building block a caller already inside a transaction uses (the matcher)."""

from decimal import Decimal

import pytest
from django.db import transaction

from accounts import services
from accounts.exceptions import IdempotencyConflict, InsufficientFunds, InvalidAmount, InvalidEntry
from accounts.lock_objects import accounts_lock
from accounts.models import Account, Bucket, EntryKind, JournalEntry
from accounts.services import EntrySpec, Leg
from testing.helpers import assert_ledger_sound, balance_of, ledger_state, new_key

pytestmark = pytest.mark.django_db


def fill_entry(buyer, seller, fees, usd, aapl, *, key, price="229.50", qty="2", fee="0.46"):
    """A trade as one entry: cash to the seller, shares to the buyer, a fee to the venue."""
    notional = Decimal(price) * Decimal(qty)
    return EntrySpec(
        kind=EntryKind.TRADE,
        reference=key,
        idempotency_key=key,
        legs=(
            Leg(buyer, usd, Bucket.HELD, -(notional + Decimal(fee))),
            Leg(seller, usd, Bucket.PENDING, notional),
            Leg(fees, usd, Bucket.AVAILABLE, Decimal(fee)),
            Leg(seller, aapl, Bucket.HELD, -Decimal(qty)),
            Leg(buyer, aapl, Bucket.PENDING, Decimal(qty)),
        ),
    )


@pytest.fixture
def market(make_account, usd, aapl):
    buyer = make_account(funds={usd: "2000"})
    seller = make_account(funds={aapl: "10"})
    services.hold(
        account=buyer, asset=usd, amount=Decimal("2000"), reference="o1", idempotency_key=new_key()
    )
    services.hold(
        account=seller, asset=aapl, amount=Decimal("10"), reference="o2", idempotency_key=new_key()
    )
    fees = services.platform_account_open(kind=Account.Kind.FEES)
    return buyer, seller, fees


def test_a_batch_of_fills_posts_in_the_callers_transaction(market, usd, aapl):
    buyer, seller, fees = market

    with transaction.atomic():
        accounts_lock(account_ids=[buyer.pk, seller.pk])
        entries = services.ledger_post(
            entries=[
                fill_entry(buyer, seller, fees, usd, aapl, key="fill-1"),
                fill_entry(buyer, seller, fees, usd, aapl, key="fill-2", price="229.51", qty="3"),
            ]
        )

    assert [entry.kind for entry in entries] == [EntryKind.TRADE, EntryKind.TRADE]
    assert balance_of(buyer, aapl) == (0, 0, Decimal("5"))
    assert balance_of(buyer, usd) == (0, Decimal("851.55"), 0)
    assert balance_of(seller, usd) == (0, 0, Decimal("459.00") + Decimal("688.53"))
    assert balance_of(fees, usd) == (Decimal("0.92"), 0, 0)
    assert_ledger_sound()


def test_replaying_a_batch_returns_the_first_entries(market, usd, aapl):
    buyer, seller, fees = market
    batch = [fill_entry(buyer, seller, fees, usd, aapl, key="fill-3")]
    with transaction.atomic():
        first = services.ledger_post(entries=batch)
    after_first = ledger_state()

    with transaction.atomic():
        again = services.ledger_post(entries=batch)

    assert [e.pk for e in again] == [e.pk for e in first]
    assert ledger_state() == after_first


def test_the_batch_is_checked_as_a_whole(market, usd, aapl):
    # 4 fills of 2 shares need 8, the seller holds 10: fine; 6 fills need 12: refused.
    buyer, seller, fees = market
    fills = [fill_entry(buyer, seller, fees, usd, aapl, key=f"f{n}", price="1") for n in range(6)]
    before = ledger_state()

    with pytest.raises(InsufficientFunds, match="AAPL held"), transaction.atomic():
        services.ledger_post(entries=fills)

    assert ledger_state() == before


def test_unbalanced_spec_is_refused_before_the_database(market, usd):
    buyer, seller, _ = market

    with pytest.raises(InvalidEntry, match="USD sums to -1"):
        services.ledger_post(
            entries=[
                EntrySpec(
                    kind=EntryKind.TRADE,
                    reference="bad",
                    legs=(
                        Leg(buyer, usd, Bucket.HELD, Decimal("-2")),
                        Leg(seller, usd, Bucket.PENDING, Decimal("1")),
                    ),
                )
            ]
        )


def test_empty_entry_is_refused(market):
    with pytest.raises(InvalidEntry, match="at least one posting"):
        services.ledger_post(entries=[EntrySpec(kind=EntryKind.TRADE, reference="x", legs=())])


def test_over_precise_leg_is_refused(market, usd):
    buyer, seller, _ = market

    with pytest.raises(InvalidAmount, match="USD allows 2 decimal places"):
        services.ledger_post(
            entries=[
                EntrySpec(
                    kind=EntryKind.TRADE,
                    reference="x",
                    legs=(
                        Leg(buyer, usd, Bucket.HELD, Decimal("-0.005")),
                        Leg(seller, usd, Bucket.PENDING, Decimal("0.005")),
                    ),
                )
            ]
        )


def test_a_key_twice_in_one_batch_is_refused(market, usd, aapl):
    buyer, seller, fees = market
    spec = fill_entry(buyer, seller, fees, usd, aapl, key="dup")

    with pytest.raises(InvalidEntry, match="twice"):
        services.ledger_post(entries=[spec, spec])


def test_a_key_reused_for_a_different_fill_is_a_conflict(market, usd, aapl):
    buyer, seller, fees = market
    with transaction.atomic():
        services.ledger_post(entries=[fill_entry(buyer, seller, fees, usd, aapl, key="k")])

    with pytest.raises(IdempotencyConflict), transaction.atomic():
        services.ledger_post(entries=[fill_entry(buyer, seller, fees, usd, aapl, key="k", qty="1")])


def test_entries_without_keys_are_always_posted(market, usd):
    buyer, seller, _ = market
    spec = services.movement_entry(
        kind=EntryKind.TRADE,
        source=buyer,
        source_bucket=Bucket.HELD,
        destination=seller,
        destination_bucket=Bucket.PENDING,
        asset=usd,
        amount=Decimal("1"),
        reference="no key",
    )

    with transaction.atomic():
        services.ledger_post(entries=[spec])
        services.ledger_post(entries=[spec])

    assert JournalEntry.objects.filter(reference="no key").count() == 2
    assert balance_of(seller, usd) == (0, 0, Decimal("2.00"))
