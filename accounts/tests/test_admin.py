"""The admin goes through the services and never edits the ledger."""

from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from accounts.models import Account, JournalEntry
from testing.helpers import balance_of

pytestmark = pytest.mark.django_db


def act(admin_client, action, accounts, **data):
    return admin_client.post(
        reverse("admin:accounts_account_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: [a.pk for a in accounts], **data},
        follow=True,
    )


def test_freeze_and_unfreeze_actions(admin_client, make_account):
    account = make_account()

    act(admin_client, "freeze", [account])
    account.refresh_from_db()
    assert account.is_frozen
    assert account.status_reason == "frozen in admin by root"

    act(admin_client, "unfreeze", [account])
    account.refresh_from_db()
    assert not account.is_frozen


def test_deposit_action_asks_then_posts_once_even_if_submitted_twice(
    admin_client, make_account, usd
):
    account = make_account()

    form = act(admin_client, "deposit", [account])
    key = form.context["form"].initial["idempotency_key"]
    data = {
        "apply": "1",
        "asset": usd.pk,
        "amount": "250.00",
        "reference": "wire 9",
        "memo": "",
        "idempotency_key": key,
    }
    done = act(admin_client, "deposit", [account], **data)
    act(admin_client, "deposit", [account], **data)

    assert "Deposit of 250.00 USD for account" in done.content.decode()
    assert balance_of(account, usd)[0] == Decimal("250.00")
    assert JournalEntry.objects.filter(kind="deposit", reference="wire 9").count() == 1


def test_withdraw_action_reports_refusals(admin_client, make_account, usd):
    account = make_account(funds={usd: "5"})
    data = {
        "apply": "1",
        "asset": usd.pk,
        "amount": "6",
        "reference": "payout",
        "idempotency_key": "admin-test",
    }

    response = act(admin_client, "withdraw", [account], **data)

    assert "5.00 USD available, 6.00 USD needed" in response.content.decode()
    assert balance_of(account, usd)[0] == Decimal("5.00")


def test_over_precise_amount_is_an_inline_form_error(admin_client, make_account, usd):
    account = make_account()
    data = {
        "apply": "1",
        "asset": usd.pk,
        "amount": "1.001",
        "reference": "r",
        "idempotency_key": "admin-test-2",
    }

    response = act(admin_client, "deposit", [account], **data)

    assert "USD allows 2 decimal places" in " ".join(response.context["form"].errors["amount"])
    assert not JournalEntry.objects.exists()


def test_ledger_is_read_only_even_for_a_superuser(admin_client, make_account, usd):
    account = make_account(funds={usd: "5"})
    entry = JournalEntry.objects.get()

    view = admin_client.get(reverse("admin:accounts_journalentry_change", args=[entry.pk]))
    change = admin_client.post(
        reverse("admin:accounts_journalentry_change", args=[entry.pk]), {"reference": "x"}
    )
    delete = admin_client.get(reverse("admin:accounts_journalentry_delete", args=[entry.pk]))
    add = admin_client.get(reverse("admin:accounts_journalentry_add"))

    assert view.status_code == 200
    assert "test funding" in view.content.decode()
    assert change.status_code == 403
    assert delete.status_code == 403
    assert add.status_code == 403
    for name in ["posting", "balance", "idempotencykey"]:
        assert admin_client.get(reverse(f"admin:accounts_{name}_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:accounts_account_delete", args=[account.pk])).status_code
        == 403
    )
    entry.refresh_from_db()
    assert entry.reference == "test funding"


def test_a_user_added_in_the_admin_gets_an_account(admin_client):
    admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "walkin",
            "password1": "walk-in-pass-9",
            "password2": "walk-in-pass-9",
            "usable_password": "true",
        },
    )

    assert Account.objects.filter(user__username="walkin").exists()


def test_admin_pages_render(admin_client, make_account, usd):
    account = make_account(funds={usd: "5"})
    for url in [
        reverse("admin:accounts_account_changelist"),
        reverse("admin:accounts_account_change", args=[account.pk]),
        reverse("admin:accounts_balance_changelist"),
        reverse("admin:accounts_journalentry_changelist"),
        reverse("admin:accounts_posting_changelist"),
        reverse("admin:auth_user_change", args=[account.user.pk]),
    ]:
        assert admin_client.get(url).status_code == 200, url
