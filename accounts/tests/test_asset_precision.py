"""An asset's precision is fixed once anything refers to it (issue 10, decision 0010)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from accounts import services
from accounts.models import Asset
from accounts.selectors import ledger_verify
from testing.helpers import new_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded_usd(make_account, usd):
    """USD with a customer's deposit of 10.25 booked: used."""
    account = make_account()
    services.deposit(
        account=account,
        asset=usd,
        amount=Decimal("10.25"),
        reference="w",
        idempotency_key=new_key(),
    )
    return usd


def change_form(asset: Asset, precision: int) -> dict:
    return {"code": asset.code, "name": asset.name, "precision": precision}


def test_the_admin_does_not_change_a_used_assets_precision(admin_client, funded_usd):
    url = f"/admin/accounts/asset/{funded_usd.pk}/change/"
    page = admin_client.get(url)
    assert "precision" not in page.context["adminform"].form.fields  # shown read-only
    response = admin_client.post(url, change_form(funded_usd, 0) | {"name": "Dollar"})
    assert response.status_code == 302  # the rest of the form saves
    funded_usd.refresh_from_db()
    assert (funded_usd.name, funded_usd.precision) == ("Dollar", 2)
    assert ledger_verify() == []
    call_command("ledger_check")  # raises CommandError when an invariant fails


def test_the_admin_changes_an_unused_assets_precision_and_creates_assets(admin_client):
    euro = change_form(Asset(code="EUR", name="Euro"), 2)
    response = admin_client.post("/admin/accounts/asset/add/", euro)
    assert response.status_code == 302
    eur = Asset.objects.get(code="EUR")
    url = f"/admin/accounts/asset/{eur.pk}/change/"
    assert "precision" in admin_client.get(url).context["adminform"].form.fields
    assert admin_client.post(url, change_form(eur, 3)).status_code == 302
    eur.refresh_from_db()
    assert eur.precision == 3


def test_a_form_sees_a_field_error(funded_usd):
    funded_usd.precision = 4
    with pytest.raises(ValidationError) as refused:
        funded_usd.full_clean()
    assert "precision" in refused.value.message_dict
    assert "in use" in refused.value.message_dict["precision"][0]


def _change_precision(asset: Asset, how: str) -> None:
    with transaction.atomic():
        if how == "orm":
            Asset.objects.filter(pk=asset.pk).update(precision=0)
        elif how == "save":
            asset.precision = 0
            asset.save()
        else:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE accounts_asset SET precision = 8 WHERE id = %s", [asset.pk])


@pytest.mark.parametrize("how", ["orm", "save", "sql"])
def test_the_database_refuses_a_used_assets_precision_change(funded_usd, how):
    with pytest.raises(IntegrityError, match="asset USD is in use .balances refer to it."):
        _change_precision(funded_usd, how)
    funded_usd.refresh_from_db()
    assert funded_usd.precision == 2
    assert ledger_verify() == []


def test_the_database_lets_the_rest_of_a_used_asset_change(funded_usd):
    Asset.objects.filter(pk=funded_usd.pk).update(name="Dollar", precision=2)
    funded_usd.refresh_from_db()
    assert funded_usd.name == "Dollar"
    assert funded_usd.is_used()
    assert not Asset.objects.create(code="NEW", name="New", precision=2).is_used()
