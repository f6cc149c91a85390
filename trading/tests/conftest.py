"""The trading tests' market and trader. The factories and the order path are the root
conftest's; `testing.helpers` places orders and waits for them."""

from __future__ import annotations

import pytest


@pytest.fixture
def market(make_instrument):
    """An open instrument (a test module may define its own)."""
    return make_instrument()


@pytest.fixture
def alice(make_account, market):
    """A trader funded with 1000 of the market's quote and 10 of its base."""
    return make_account(funds={market.quote: "1000", market.base: "10"})
