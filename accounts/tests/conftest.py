"""Named assets and accounts for the accounts tests (the factories are the root conftest's)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Account, Asset


@pytest.fixture
def usd(make_asset) -> Asset:
    return make_asset("USD")


@pytest.fixture
def btc(make_asset) -> Asset:
    return make_asset("BTC")


@pytest.fixture
def aapl(make_asset) -> Asset:
    return make_asset("AAPL")


@pytest.fixture
def account(make_account) -> Account:
    return make_account()


@pytest.fixture
def admin_client(client):
    """The Django admin, logged in as a superuser named root."""
    admin = get_user_model().objects.create_superuser("root", "root@tredye.test", "root-pass-1")
    client.force_login(admin)
    return client
