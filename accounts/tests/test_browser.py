"""Sign up, log out, log in and read the balances page in a real headless Chromium."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from accounts import selectors, services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_log_in_and_see_balances(usd, btc, asgi_server, browser_page):
    page = browser_page

    # when a visitor signs up
    page.goto(asgi_server + "/")
    page.click("#nav-signup")
    page.fill("#id_username", "browser-trader")
    page.fill("#id_email", "browser@trader.test")
    page.fill("#id_password1", "a-very-good-passphrase")
    page.fill("#id_password2", "a-mistyped-passphrase")
    page.click("#signup-form button[type=submit]")

    # then a mistake is shown next to the field, and nothing is created
    expect(page.locator("#id_password2_errors")).to_contain_text("didn’t match")
    page.fill("#id_password1", "a-very-good-passphrase")
    page.fill("#id_password2", "a-very-good-passphrase")
    page.click("#signup-form button[type=submit]")

    # then they land on their (empty) balances, signed in
    expect(page).to_have_url(asgi_server + "/accounts/balances/")
    expect(page.locator("#user-name")).to_have_text("browser-trader")
    expect(page.locator('#balances tr[data-asset="USD"] [data-field="available"]')).to_have_text(
        "0.00"
    )
    expect(page.locator("#ledger")).to_contain_text("Nothing yet")

    # when they log out, an operator deposits, and they log in again
    page.click("#logout-button")
    expect(page.locator("#nav-login")).to_be_visible()
    account = selectors.account_get(username="browser-trader")
    services.deposit(
        account=account,
        asset=usd,
        amount=Decimal("2500.75"),
        reference="wire 42",
        idempotency_key="browser-wire-42",
    )
    services.hold(
        account=account,
        asset=usd,
        amount=Decimal("500"),
        reference="order 1",
        idempotency_key="browser-hold-1",
    )
    page.click("#nav-login")
    page.fill("#id_username", "browser-trader")
    page.fill("#id_password", "a-very-good-passphrase")
    page.click("#login-form button[type=submit]")

    # then the balances page shows the money, split into available and held, and the history
    expect(page).to_have_url(asgi_server + "/accounts/balances/")
    usd_row = page.locator('#balances tr[data-asset="USD"]')
    expect(usd_row.locator('[data-field="available"]')).to_have_text("2,000.75")
    expect(usd_row.locator('[data-field="held"]')).to_have_text("500.00")
    expect(usd_row.locator('[data-field="total"]')).to_have_text("2,500.75")
    expect(page.locator('#balances tr[data-asset="BTC"] [data-field="total"]')).to_have_text(
        "0.00000000"
    )
    expect(page.locator("#ledger")).to_contain_text("wire 42")
    expect(page.locator("#ledger")).to_contain_text("+2,500.75")
