"""Sign-up, login, logout, password change and the balances page, through the test client."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts import services
from accounts.models import Account
from testing.factories import TEST_PASSWORD
from testing.helpers import new_key

pytestmark = pytest.mark.django_db

SIGNUP = {
    "username": "newtrader",
    "email": "new@trader.test",
    "password1": "correct-horse-battery",
    "password2": "correct-horse-battery",
}


def test_signup_creates_a_user_with_an_account_and_signs_them_in(client, usd):
    response = client.post(reverse("accounts:signup"), SIGNUP, follow=True)

    assert response.redirect_chain[-1][0] == reverse("accounts:balances")
    user = get_user_model().objects.get(username="newtrader")
    assert Account.objects.get(user=user).kind == Account.Kind.CUSTOMER
    content = response.content.decode()
    assert "Welcome to Tredye, newtrader." in content
    assert 'data-asset="USD"' in content


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"password2": "something-else-entirely"}, "password2", "password fields didn"),
        ({"password1": "short", "password2": "short"}, "password2", "too short"),
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"username": ""}, "username", "This field is required"),
    ],
)
def test_signup_shows_errors_inline_and_creates_nothing(client, change, field, message):
    response = client.post(reverse("accounts:signup"), SIGNUP | change)

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert message in " ".join(errors[field])
    assert f'id="id_{field}_errors"' in response.content.decode()
    assert not get_user_model().objects.filter(username=SIGNUP["username"]).exists()
    assert not Account.objects.filter(kind=Account.Kind.CUSTOMER).exists()


def test_signup_refuses_a_taken_username_or_email(client, make_account):
    make_account("taken").user.__class__.objects.filter(username="taken").update(
        email="taken@trader.test"
    )

    by_name = client.post(reverse("accounts:signup"), SIGNUP | {"username": "taken"})
    by_email = client.post(reverse("accounts:signup"), SIGNUP | {"email": "TAKEN@trader.test"})

    assert "already exists" in " ".join(by_name.context["form"].errors["username"])
    assert "already exists" in " ".join(by_email.context["form"].errors["email"])


def test_signup_can_be_closed(client, settings):
    settings.ACCOUNTS_SIGNUP_OPEN = False

    assert client.get(reverse("accounts:signup")).status_code == 404


def test_balances_needs_a_login(client):
    response = client.get(reverse("accounts:balances"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next=/accounts/balances/"


def test_login_then_balances_and_history(client, make_account, usd, btc):
    account = make_account("frank", funds={usd: "1234.5"})
    services.hold(
        account=account,
        asset=usd,
        amount=Decimal("34.5"),
        reference="order 7",
        idempotency_key=new_key(),
    )

    response = client.post(
        reverse("accounts:login"), {"username": "frank", "password": TEST_PASSWORD}, follow=True
    )

    content = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("accounts:balances")
    assert '<td class="num" data-field="available">1,200.00</td>' in content
    assert '<td class="num" data-field="held">34.50</td>' in content
    assert '<td class="num" data-field="available">0.00000000</td>' in content  # BTC
    assert "order 7" in content
    assert "+1,234.50" in content
    assert "3 postings" in content


def test_wrong_password_shows_an_error(client, make_account):
    make_account("gina")

    response = client.post(reverse("accounts:login"), {"username": "gina", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_history_is_paginated(client, make_account, usd, settings):
    settings.ACCOUNTS_LEDGER_PAGE_SIZE = 2
    account = make_account("hank", funds={usd: "10"})
    for n in range(3):
        services.hold(
            account=account,
            asset=usd,
            amount=Decimal(1),
            reference=f"o{n}",
            idempotency_key=new_key(),
        )
    client.force_login(account.user)

    first = client.get(reverse("accounts:balances")).content.decode()
    last = client.get(reverse("accounts:balances"), {"page": 4}).content.decode()

    assert "Page 1 of 4" in first
    assert 'rel="next"' in first
    assert "Page 4 of 4" in last
    assert "Deposit" in last
    # the newest hold is on page 1 only (look at the reference cells, not the whole page,
    # whose random CSRF token may contain any two characters)
    assert '<td class="reference">o2</td>' in first
    assert '<td class="reference">o2</td>' not in last


def test_frozen_account_sees_a_notice(client, make_account):
    account = make_account("ivy")
    services.account_freeze(account=account, reason="document check")
    client.force_login(account.user)

    content = client.get(reverse("accounts:balances")).content.decode()

    assert "This account is frozen: document check." in content


def test_a_user_made_elsewhere_gets_an_account_on_first_visit(client, usd):
    user = get_user_model().objects.create_user("jill", password=TEST_PASSWORD)
    client.force_login(user)

    response = client.get(reverse("accounts:balances"))

    assert response.status_code == 200
    assert Account.objects.filter(user=user).exists()


def test_logout_is_a_post(client, make_account):
    client.force_login(make_account("kim").user)

    assert client.get(reverse("accounts:logout")).status_code == 405
    response = client.post(reverse("accounts:logout"))

    assert response.status_code == 302
    assert client.get(reverse("accounts:balances")).status_code == 302


def test_password_change(client, make_account):
    account = make_account("lou")
    client.force_login(account.user)

    response = client.post(
        reverse("accounts:password_change"),
        {
            "old_password": TEST_PASSWORD,
            "new_password1": "a-brand-new-secret",
            "new_password2": "a-brand-new-secret",
        },
        follow=True,
    )

    assert "Password changed" in response.content.decode()
    account.user.refresh_from_db()
    assert account.user.check_password("a-brand-new-secret")


def test_nav_shows_login_links_or_the_user(client, make_account):
    anonymous = client.get(reverse("accounts:login")).content.decode()
    client.force_login(make_account("max").user)
    signed_in = client.get(reverse("accounts:balances")).content.decode()

    assert 'id="nav-login"' in anonymous
    assert 'id="nav-signup"' in anonymous
    assert 'id="user-name"' in signed_in
    assert ">max</a>" in signed_in
    assert 'id="logout-button"' in signed_in
    assert 'id="nav-balances"' in signed_in
