"""seed_demo funds the demo trader and the market maker through the ledger, once."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from accounts import selectors
from accounts.models import Asset, EntryKind, JournalEntry
from testing.helpers import assert_ledger_sound, balance_of

pytestmark = pytest.mark.django_db


def test_seed_demo_funds_demo_accounts_through_deposits_once():
    first, second = StringIO(), StringIO()

    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)

    assert "demo funding: 14 deposits made through the ledger" in first.getvalue()
    assert "demo funding: 0 deposits made through the ledger" in second.getvalue()
    demo = selectors.account_get(username="demo")
    maker = selectors.account_get(username="market-maker")
    assert balance_of(demo, Asset.objects.get(code="USD")) == (Decimal("100000.00"), 0, 0)
    assert balance_of(maker, Asset.objects.get(code="BTC"))[0] == Decimal("500")
    assert balance_of(maker, Asset.objects.get(code="AAPL"))[0] == Decimal("300000")
    funding = JournalEntry.objects.filter(reference="demo funding")
    assert funding.count() == 14
    assert set(funding.values_list("kind", flat=True)) == {EntryKind.DEPOSIT}
    assert selectors.account_get(username="admin") is not None
    assert_ledger_sound()
