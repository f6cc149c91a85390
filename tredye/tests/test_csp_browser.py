"""Every page works under the Content-Security-Policy, in a real headless Chromium.

Each page is loaded from the real daphne with the policy the settings send; an init script
records every `securitypolicyviolation` event and the console's errors are kept. A page passes
when it sent the policy, nothing was refused, and its own script ran where it has one.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from testing.factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push({
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    sample: event.sample,
  });
});
"""


INLINE_SCRIPT_AND_STYLE = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__inlineRan = true;";
  document.head.appendChild(script);
  const styled = document.createElement("div");
  styled.setAttribute("style", "color: red");
  document.body.appendChild(styled);
}"""


class Watched:
    """A page whose CSP violations, console errors and uncaught errors are kept."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on(
            "response",
            lambda response: (
                self.console_errors.append(f"{response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )

    def open(self, path: str) -> str:
        response = self.page.goto(self.base_url + path)
        assert response is not None
        assert response.ok, f"{path}: {response.status}"
        self.page.wait_for_load_state("load")
        return response.headers.get("content-security-policy", "")

    def violations(self) -> list[dict]:
        return self.page.evaluate("window.__csp")

    def assert_clean(self, path: str) -> None:
        self.page.wait_for_timeout(300)  # late scripts and their requests
        assert self.violations() == [], f"{path}: CSP violations {self.violations()}"
        assert self.console_errors == [], f"{path}: console errors {self.console_errors}"
        assert self.page_errors == [], f"{path}: script errors {self.page_errors}"


def log_in(watched: Watched, path: str, username: str, form: str) -> None:
    watched.open(path)
    watched.page.fill("#id_username", username)
    watched.page.fill("#id_password", TEST_PASSWORD)
    watched.page.click(f"{form} [type=submit]")
    watched.page.wait_for_load_state("load")


def test_every_page_works_under_the_content_security_policy(
    make_instrument,
    make_account,
    asgi_server,
    browser_page,
):
    # rows first: the browser's event loop must not be running when the ORM is used
    make_instrument("AAPL", price="200.00")
    trader = make_account("csp-trader").user
    admin = make_account("csp-admin").user
    get_user_model().objects.filter(pk=admin.pk).update(is_staff=True, is_superuser=True)
    watched = Watched(browser_page, asgi_server)
    page = browser_page

    # the watchlist: the policy is sent, and the page's module script runs under it
    policy = watched.open("/")
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    assert "connect-src 'self'" in policy
    page.locator('#connection[data-state="live"]').wait_for(timeout=10000)  # its socket is open
    watched.assert_clean("/")

    # the listener is not blind: an inline script and an inline style are refused, and seen
    page.evaluate(INLINE_SCRIPT_AND_STYLE)
    page.wait_for_timeout(200)
    assert page.evaluate("window.__inlineRan === undefined")
    directives = {v["directive"] for v in watched.violations()}
    assert {"script-src-elem", "style-src-attr"} <= directives, directives
    watched.console_errors.clear()

    for path in ["/accounts/login/", "/accounts/signup/"]:
        assert "default-src 'self'" in watched.open(path)
        watched.assert_clean(path)

    # signed in: balances and the password change form
    log_in(watched, "/accounts/login/", trader.username, "#login-form")
    expect(page.locator("#user-name")).to_have_text(trader.username)
    for path in ["/accounts/balances/", "/accounts/password/", "/trading/statements/"]:
        watched.open(path)
        watched.assert_clean(path)

    # the admin: its login page, its index and a change list (their scripts are static files)
    page.click("#logout-button")
    page.wait_for_load_state("load")
    watched.open("/admin/login/")
    watched.assert_clean("/admin/login/")
    log_in(watched, "/admin/login/", admin.username, "#login-form")
    expect(page.locator("#site-name")).to_be_visible()
    for path in ["/admin/", "/admin/accounts/account/"]:
        watched.open(path)
        watched.assert_clean(path)
