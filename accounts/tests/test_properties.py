"""Random sequences of the services keep every invariant, and match a simple model."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from accounts import selectors, services
from accounts.exceptions import (
    AccountFrozen,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidEntry,
)
from accounts.models import Account, Asset, Bucket, EntryKind, JournalEntry
from testing.factories import make_account, make_asset

ACCOUNTS = 3
BUCKETS = list(Bucket)
amounts = st.integers(min_value=0, max_value=4).flatmap(
    lambda places: st.decimals(
        min_value=Decimal("-5"),
        max_value=Decimal("400"),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )
)
account_index = st.integers(min_value=0, max_value=ACCOUNTS - 1)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.assets = [
            make_asset(code, places) for code, places in [("USD", 2), ("AAPL", 0), ("BTC", 3)]
        ]
        self.accounts = [make_account(f"prop-{uuid.uuid4().hex[:12]}") for _ in range(ACCOUNTS)]
        self.frozen = [False] * ACCOUNTS
        # (account index, asset code) -> {bucket: amount}
        self.model = {
            (i, asset.code): dict.fromkeys(Bucket.values, Decimal(0))
            for i in range(ACCOUNTS)
            for asset in self.assets
        }
        self.done: list[tuple[str, dict, int]] = []  # (service, arguments, entry id)

    # helpers -------------------------------------------------------------------------------

    def valid(self, amount: Decimal, asset: Asset) -> bool:
        return amount > 0 and amount == amount.quantize(Decimal(1).scaleb(-asset.precision))

    def call(self, name: str, expected: type[Exception] | None, **arguments) -> None:
        arguments["idempotency_key"] = f"prop-{uuid.uuid4()}"
        service = getattr(services, name)
        if expected is not None:
            with pytest.raises(expected):
                service(**arguments)
            return
        entry = service(**arguments)
        self.done.append((name, arguments, entry.pk))

    def move(self, i: int, asset: Asset, bucket: str, amount: Decimal) -> None:
        self.model[(i, asset.code)][bucket] += amount

    def short(self, i: int, asset: Asset, bucket: str, amount: Decimal) -> bool:
        return self.model[(i, asset.code)][bucket] < amount

    # rules ---------------------------------------------------------------------------------

    @rule(i=account_index, asset_n=st.integers(0, 2), amount=amounts)
    def deposit(self, i, asset_n, amount):
        asset = self.assets[asset_n]
        expected = None if self.valid(amount, asset) else InvalidAmount
        self.call(
            "deposit", expected, account=self.accounts[i], asset=asset, amount=amount, reference="d"
        )
        if expected is None:
            self.move(i, asset, "available", amount)

    @rule(
        i=account_index,
        asset_n=st.integers(0, 2),
        amount=amounts,
        name=st.sampled_from(["withdraw", "hold", "release"]),
    )
    def take(self, i, asset_n, amount, name):
        asset = self.assets[asset_n]
        source = "held" if name == "release" else "available"
        if not self.valid(amount, asset):
            expected = InvalidAmount
        elif self.frozen[i] and name != "release":
            expected = AccountFrozen
        elif self.short(i, asset, source, amount):
            expected = InsufficientFunds
        else:
            expected = None
        self.call(
            name, expected, account=self.accounts[i], asset=asset, amount=amount, reference=name
        )
        if expected is None:
            self.move(i, asset, source, -amount)
            if name == "hold":
                self.move(i, asset, "held", amount)
            elif name == "release":
                self.move(i, asset, "available", amount)

    @rule(
        source=account_index,
        source_bucket=st.sampled_from(BUCKETS),
        destination=account_index,
        destination_bucket=st.sampled_from(BUCKETS),
        asset_n=st.integers(0, 2),
        amount=amounts,
        kind=st.sampled_from([EntryKind.TRADE, EntryKind.SETTLEMENT, EntryKind.ADJUSTMENT]),
    )
    def transfer(
        self, source, source_bucket, destination, destination_bucket, asset_n, amount, kind
    ):
        asset = self.assets[asset_n]
        if not self.valid(amount, asset):
            expected = InvalidAmount
        elif source == destination and source_bucket == destination_bucket:
            expected = InvalidEntry
        elif self.frozen[source] and source != destination and source_bucket == "available":
            expected = AccountFrozen
        elif self.short(source, asset, source_bucket, amount):
            expected = InsufficientFunds
        else:
            expected = None
        self.call(
            "transfer",
            expected,
            source=self.accounts[source],
            source_bucket=source_bucket,
            destination=self.accounts[destination],
            destination_bucket=destination_bucket,
            asset=asset,
            amount=amount,
            kind=kind,
            reference="t",
        )
        if expected is None:
            self.move(source, asset, source_bucket, -amount)
            self.move(destination, asset, destination_bucket, amount)

    @rule(i=account_index)
    def freeze_or_unfreeze(self, i):
        if self.frozen[i]:
            services.account_unfreeze(account=self.accounts[i])
        else:
            services.account_freeze(account=self.accounts[i], reason="property test")
        self.frozen[i] = not self.frozen[i]

    @rule(data=st.data())
    def repeat_a_call(self, data):
        if not self.done:
            return
        name, arguments, entry_id = data.draw(st.sampled_from(self.done))
        entries_before = JournalEntry.objects.count()

        entry = getattr(services, name)(**arguments)

        assert entry.pk == entry_id
        assert JournalEntry.objects.count() == entries_before

    @rule(data=st.data())
    def reuse_a_key_differently(self, data):
        if not self.done:
            return
        name, arguments, _ = data.draw(st.sampled_from(self.done))
        changed = arguments | {"reference": arguments["reference"] + " (changed)"}
        with pytest.raises(IdempotencyConflict):
            getattr(services, name)(**changed)

    # invariants ----------------------------------------------------------------------------

    @invariant()
    def ledger_is_sound(self):
        breaks = selectors.ledger_verify()
        assert breaks == [], "\n".join(map(str, breaks))

    @invariant()
    def balances_match_the_model(self):
        for i, account in enumerate(self.accounts):
            for asset in self.assets:
                row = selectors.balance_get(account=account, asset=asset)
                actual = {"available": row.available, "held": row.held, "pending": row.pending}
                assert actual == self.model[(i, asset.code)], (account, asset)
                assert min(actual.values()) >= 0

    @invariant()
    def frozen_flags_match(self):
        states = Account.objects.filter(pk__in=[a.pk for a in self.accounts]).order_by("pk")
        assert [a.is_frozen for a in states] == self.frozen


@pytest.mark.django_db
def test_random_sequences_of_services_keep_the_invariants():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
