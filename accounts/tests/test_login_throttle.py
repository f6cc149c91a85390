"""Login throttling (django-axes): wrong passwords lock a username at an address for a while.

Locked by username and address together (tredye/settings/base.py says why): the same
username from another address, and other usernames from the same address, still sign in.
"""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from testing.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3
LOGIN = reverse("accounts:login")
ADMIN_LOGIN = reverse("admin:login")


@pytest.fixture(autouse=True)
def throttling(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.TRUSTED_PROXIES = []
    return settings


@pytest.fixture
def trader(make_account):
    return make_account("throttled-trader").user


def sign_in(client, username, password, *, url=LOGIN, address="127.0.0.1", **extra):
    return client.post(
        url, {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def signed_in_as(client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id).username if user_id else None


def lock_out(client, username, *, url=LOGIN, address="127.0.0.1"):
    """LIMIT wrong passwords: the first LIMIT-1 get the form again, the last the lockout."""
    for _ in range(LIMIT - 1):
        response = sign_in(client, username, "wrong-password", url=url, address=address)
        assert response.status_code == 200
    response = sign_in(client, username, "wrong-password", url=url, address=address)
    assert response.status_code == 429
    return response


def test_past_the_limit_even_the_right_password_is_refused_with_a_clear_429_page(client, trader):
    lock_out(client, trader.username)

    response = sign_in(client, trader.username, TEST_PASSWORD)

    assert response.status_code == 429
    assert signed_in_as(client) is None
    assert int(response["Retry-After"]) == 15 * 60
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Too many sign-in attempts" in page
    assert "Wait 15 minutes" in page
    assert 'class="topbar"' in page  # in the site's layout (base.html)
    assert 'id="locked-out"' in page


def test_thirty_wrong_passwords_are_not_all_weighed(client, trader):
    answers = [sign_in(client, trader.username, f"guess-{n}").status_code for n in range(30)]

    assert answers[: LIMIT - 1] == [200] * (LIMIT - 1)
    assert set(answers[LIMIT - 1 :]) == {429}


def test_other_users_and_the_same_user_elsewhere_are_not_locked_out(client, trader, make_account):
    other = make_account("other-trader").user
    lock_out(client, trader.username, address="203.0.113.7")

    # another username from the same address
    assert sign_in(client, other.username, TEST_PASSWORD, address="203.0.113.7").status_code == 302
    assert signed_in_as(client) == other.username
    client.logout()
    # the same username from another address: a guesser cannot lock a trader out
    assert sign_in(client, trader.username, TEST_PASSWORD, address="198.51.100.9").status_code == (
        302
    )
    assert signed_in_as(client) == trader.username


def test_the_lockout_ends_after_the_cool_off(client, trader, settings):
    from axes.models import AccessAttempt

    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    lock_out(client, trader.username)
    assert sign_in(client, trader.username, TEST_PASSWORD).status_code == 429

    # 16 minutes later (the attempts are dated back rather than the test waiting)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))

    response = sign_in(client, trader.username, TEST_PASSWORD)
    assert response.status_code == 302
    assert signed_in_as(client) == trader.username


def test_a_short_cool_off_from_the_settings_is_honoured(client, trader, settings):
    import time

    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    lock_out(client, trader.username)
    time.sleep(1.2)

    assert sign_in(client, trader.username, TEST_PASSWORD).status_code == 302


def test_the_admin_login_is_throttled_too(client, make_account):
    admin = make_account("throttled-admin").user
    admin.is_staff = admin.is_superuser = True
    admin.save()
    lock_out(client, admin.username, url=ADMIN_LOGIN)

    response = sign_in(client, admin.username, TEST_PASSWORD, url=ADMIN_LOGIN)

    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.content.decode()
    assert signed_in_as(client) is None


def test_failures_on_either_login_page_count_together(client, trader):
    for _ in range(LIMIT - 1):
        assert sign_in(client, trader.username, "wrong", url=ADMIN_LOGIN).status_code == 200
    assert sign_in(client, trader.username, "wrong").status_code == 429


def test_a_right_password_before_the_limit_clears_the_failures(client, trader):
    for _ in range(LIMIT - 1):
        sign_in(client, trader.username, "wrong")
    assert sign_in(client, trader.username, TEST_PASSWORD).status_code == 302
    client.logout()

    for _ in range(LIMIT - 1):
        assert sign_in(client, trader.username, "wrong").status_code == 200


def test_forwarded_for_counts_only_from_a_trusted_proxy(client, trader, settings):
    # Untrusted peer: a made-up X-Forwarded-For does not give a guesser a fresh address.
    for n in range(LIMIT - 1):
        sign_in(client, trader.username, "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    response = sign_in(client, trader.username, "wrong", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429

    # Behind a trusted proxy, the address it forwards is the client's own.
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    response = sign_in(client, trader.username, TEST_PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.50")
    assert response.status_code == 302


def test_under_daphne_the_lockout_page_is_served_too(make_account, asgi_server):
    """The web process runs the middleware chain async; the 429 page must come out the same."""
    import http.cookiejar
    import re
    import urllib.error
    import urllib.parse
    import urllib.request

    user = make_account("daphne-throttled").user
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = asgi_server + LOGIN

    def attempt(password: str) -> tuple[int, str]:
        page = opener.open(url, timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        body = urllib.parse.urlencode(
            {"username": user.username, "password": password, "csrfmiddlewaretoken": token}
        ).encode()
        request = urllib.request.Request(url, data=body, headers={"Referer": url})  # noqa: S310
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    from tredye.settings import base

    limit = base.AXES_FAILURE_LIMIT  # the web process's, from the environment
    answers = [attempt("wrong")[0] for _ in range(limit)]
    status, page = attempt(TEST_PASSWORD)

    assert answers == [200] * (limit - 1) + [429]
    assert status == 429
    assert "Too many sign-in attempts" in page
    assert f"as <b>{user.username}</b>" in page
