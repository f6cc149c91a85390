"""Factories for the accounts tests, exposed as fixtures."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from accounts import services
from accounts.models import Account, Asset

ASSETS = {"USD": ("US dollar", 2), "BTC": ("Bitcoin", 8), "AAPL": ("Apple Inc.", 0)}
_usernames = itertools.count(1)
TEST_PASSWORD = "a-long-test-password"  # noqa: S105 - test users only


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def key() -> Callable[[], str]:
    """A fresh idempotency key per call."""
    return new_key


@pytest.fixture
def make_asset(db) -> Callable[..., Asset]:
    def make(code: str = "USD", precision: int | None = None) -> Asset:
        name, default_precision = ASSETS.get(code, (code, 2))
        asset, _ = Asset.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "precision": default_precision if precision is None else precision,
            },
        )
        return asset

    return make


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
def make_account(db) -> Callable[..., Account]:
    """A user with a trading account; `funds` deposits through the real service."""

    def make(username: str | None = None, *, funds: dict[Asset, str] | None = None) -> Account:
        name = username or f"trader{next(_usernames)}-{uuid.uuid4().hex[:6]}"
        user = get_user_model().objects.create_user(name, password=TEST_PASSWORD)
        account = services.account_open(user=user)
        for asset, amount in (funds or {}).items():
            services.deposit(
                account=account,
                asset=asset,
                amount=Decimal(amount),
                reference="test funding",
                idempotency_key=new_key(),
            )
        return account

    return make


@pytest.fixture
def account(make_account) -> Account:
    return make_account()


@pytest.fixture
def admin_client(client):
    """The Django admin, logged in as a superuser named root."""
    admin = get_user_model().objects.create_superuser("root", "root@tredye.test", "root-pass-1")
    client.force_login(admin)
    return client
