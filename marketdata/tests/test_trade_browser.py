"""The trading screen in real Chromium on the real stack (relay, matcher, stream worker,
daphne), driven as a trader would: log in, place, see, cancel, fill."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from testing.factories import TEST_PASSWORD
from testing.helpers import place, settled
from testing.stream_client import Stack
from trading.models import Instrument

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, stack: Stack, username: str, symbol: str) -> None:  # noqa: ANN001 - a Page
    page.goto(f"{stack.url}/accounts/login/?next=/trade/{symbol}/")
    page.fill("#id_username", username)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("#login-form button[type=submit]")
    log_in_done(page, stack, symbol)


def log_in_done(page, stack: Stack, symbol: str) -> None:  # noqa: ANN001 - a Page
    """On the market's screen, its book and the trader's orders live."""
    expect(page).to_have_url(f"{stack.url}/trade/{symbol}/")
    page.wait_for_function(
        "s => window.tredyeMarket && window.tredyeMarket.channel(`book.${s}`)?.status === 'live'"
        " && window.tredyeMarket.channel('orders')?.status === 'live'",
        arg=symbol,
    )


def test_a_trader_places_sees_cancels_and_fills_orders_without_a_reload(
    stack, market, browser_page
):
    instrument, alice, bob = market
    symbol = instrument.symbol
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # given bob's ask resting in the book, and orders of at most 1,000,000
    settled(place(bob, instrument, "sell", "5", price="101.00"))
    Instrument.objects.filter(pk=instrument.pk).update(max_quantity=Decimal("1000000"))
    # she logs in, and picks the market from the watchlist
    page.goto(f"{stack.url}/accounts/login/")
    page.fill("#id_username", alice.user.username)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.goto(f"{stack.url}/")
    page.click(f'#watchlist a[href="/trade/{symbol}/"]')
    log_in_done(page, stack, symbol)
    ask = page.locator('#asks tr[data-price="101"]')
    expect(ask).to_be_visible()
    expect(ask.locator("td").nth(1)).to_have_text("5")

    # when alice places a limit buy with the mouse
    page.click("#ticket-price")
    page.fill("#ticket-price", "99.50")
    page.fill("#ticket-quantity", "2")
    expect(page.locator("#estimate-cost")).to_have_text("199.00 USD")
    page.click("#ticket-submit")
    # then it is in her open orders and marked on the ladder at its price
    first = page.locator('#open-orders tr[data-status="new"]')
    expect(first).to_have_count(1)
    expect(first.locator("td").nth(3)).to_have_text("99.5")
    expect(page.locator('#bids tr[data-price="99.5"]')).to_have_class(re.compile(r"\bown\b"))
    # and the depth chart draws both sides of the book
    page.wait_for_function("() => window.tredyeDepth.drawn?.bids === 1")

    # when she amends it: a new price and quantity, in place
    first.locator("button.amend").click()
    first.locator('input[name="price"]').fill("99.60")
    first.locator('input[name="quantity"]').fill("3")
    first.locator("button.save").click()
    # then the order and the ladder show the amended order (the matcher applied the replace)
    expect(first.locator("td").nth(3)).to_have_text("99.6")
    expect(first.locator("td").nth(4)).to_have_text("3")
    expect(page.locator('#bids tr[data-price="99.6"]')).to_have_class(re.compile(r"\bown\b"))
    expect(page.locator('#bids tr[data-price="99.5"]')).to_have_count(0)

    # and with the keyboard: type the price, tab to the quantity, press Enter
    page.focus("#ticket-price")
    page.keyboard.press("Control+A")
    page.keyboard.type("99.40")
    page.keyboard.press("Tab")
    page.keyboard.type("1")
    page.keyboard.press("Enter")
    expect(page.locator('#open-orders tr[data-status="new"]')).to_have_count(2)
    expect(page.locator('#bids tr[data-price="99.4"]')).to_be_visible()

    # when she cancels one, then cancels all
    page.locator('#open-orders tr:has(td:text-is("99.4")) button.cancel').click()
    expect(page.locator("#open-orders tr")).to_have_count(1)
    expect(page.locator('#bids tr[data-price="99.4"]')).to_have_count(0)
    page.click("#cancel-all")
    expect(page.locator("#open-orders tr")).to_have_count(0)

    # an order off the tick is stopped before it is sent, with the reason at the price
    page.fill("#ticket-price", "99.555")
    page.fill("#ticket-quantity", "1")
    page.click("#ticket-submit")
    expect(page.locator("#error-price")).to_contain_text("multiple of the tick size 0.01")
    # so is one over the largest order size, with the reason at the quantity
    page.fill("#ticket-price", "100.00")
    page.fill("#ticket-quantity", "2000000")
    page.click("#ticket-submit")
    expect(page.locator("#error-quantity")).to_have_text("The largest order is 1000000.")
    # one the server refuses shows its words at the field concerned (insufficient funds)
    page.fill("#ticket-price", "100.00")
    page.fill("#ticket-quantity", "900000")
    page.click("#ticket-submit")
    expect(page.locator("#error-quantity")).to_contain_text("Not enough funds")
    expect(page.locator("#error-quantity")).to_contain_text("USD needed")
    expect(page.locator("#error-price")).to_be_empty()

    # when a marketable buy crosses bob's ask
    page.fill("#ticket-price", "101.00")
    page.fill("#ticket-quantity", "2")
    page.click("#ticket-submit")
    # then, without a reload: the trade on the tape, the ask shrunk, her position and balance
    expect(page.locator("#tape tr").first.locator("td").nth(1)).to_have_text("101")
    expect(page.locator("#tape tr").first).to_have_class(re.compile(r"\bup\b"))
    expect(ask.locator("td").nth(1)).to_have_text("3")
    position = page.locator(f'#positions tr[data-symbol="{symbol}"]')
    expect(position.locator("td").nth(1)).to_have_text("2")
    expect(position.locator("td").nth(3)).to_have_text("101")  # marked to the last trade
    expect(position.locator("td").nth(4)).to_have_text(re.compile(r"^-?\d+\.\d{2}$"))
    fill = page.locator("#fills tr").first
    expect(fill.locator("td").nth(3)).to_have_text("101")
    expect(fill.locator("td").nth(4)).to_have_text("2")
    expect(page.locator('#order-history tr[data-status="filled"]')).to_have_count(1)
    expect(page.locator('#order-history tr[data-status="canceled"]')).to_have_count(2)
    base = page.locator(f'#balances tr[data-asset="{instrument.base.code}"]')
    expect(base.locator("td").nth(3)).not_to_have_text("0")  # pending until settlement
    assert errors == []


def test_the_screen_has_a_chart_shortcuts_help_themes_and_its_round_trip(
    stack, market, browser_page
):
    instrument, alice, bob = market
    symbol = instrument.symbol
    page = browser_page
    settled(place(bob, instrument, "sell", "3", price="100.50"))
    settled(place(alice, instrument, "buy", "1", price="100.50"))
    log_in(page, stack, alice.user.username, symbol)
    # the chart, its licence's link, and the trader's own fill marked on it
    expect(page.locator("#chart a", has_text="TradingView")).to_be_visible()
    page.wait_for_function("() => window.tredyeChart.markers().length === 1")
    # the server round trip and the freshest price's age are shown
    expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+ ms$"), timeout=10000)
    expect(page.locator("#price-age")).to_have_text(re.compile(r"^\d+\.\d s$"))
    # keyboard: S puts the ticket on the sell side with the cursor in the quantity
    page.locator("body").press("s")
    expect(page.locator('#ticket input[value="sell"]')).to_be_checked()
    expect(page.locator("#ticket-quantity")).to_be_focused()
    page.keyboard.type("1")
    page.focus("#ticket-price")
    page.keyboard.type("101.00")
    page.keyboard.press("Enter")
    expect(page.locator('#open-orders tr[data-status="new"]')).to_have_count(1)
    # Shift+X cancels all of them
    page.locator("#tape-title").click()  # out of the ticket: keys are shortcuts again
    page.keyboard.press("Shift+X")
    expect(page.locator("#open-orders tr")).to_have_count(0)
    # the page reports its frame render times to the server (a beacon, then a histogram)
    assert page.evaluate("() => window.tredyeFrames.length") > 0
    with page.expect_request("**/metrics/frames") as beacon:
        page.evaluate("() => window.dispatchEvent(new Event('pagehide'))")
    assert beacon.value.method == "POST"
    # ? lists the shortcuts, Esc closes the list
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    expect(page.locator("#shortcuts")).to_contain_text("Cancel all open orders")
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    # T switches between the dark and the light theme, and the choice is remembered
    first = page.evaluate("() => document.documentElement.dataset.theme")
    other = "light" if first == "dark" else "dark"
    page.keyboard.press("t")
    expect(page.locator("html")).to_have_attribute("data-theme", other)
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", other)


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_screenshots_of_the_trading_screen_desktop_and_phone_dark_and_light(
    stack, market, browser_page
):
    instrument, alice, bob = market
    page = browser_page
    # a book with some depth, a few trades and a resting order of alice's own
    for i, (price, quantity) in enumerate([("100.40", "7"), ("100.55", "4"), ("100.80", "12")]):
        settled(place(bob, instrument, "sell", quantity, price=price))
        settled(place(alice, instrument, "buy", str(5 + i), price=f"99.{60 + 15 * i}"))
    settled(place(alice, instrument, "buy", "2", price="100.40"))
    settled(place(alice, instrument, "buy", "1", price="100.55"))
    log_in(page, stack, alice.user.username, instrument.symbol)
    expect(page.locator("#tape tr")).to_have_count(2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, height, name in ((1440, 900, "desktop"), (390, 844, "phone")):
        page.set_viewport_size({"width": width, "height": height})
        for theme in ("dark", "light"):
            page.evaluate("t => { localStorage.setItem('tredye.theme', t); }", theme)
            page.reload()
            page.wait_for_function(
                "s => window.tredyeMarket.channel(`book.${s}`)?.status === 'live'",
                arg=instrument.symbol,
            )
            expect(page.locator("html")).to_have_attribute("data-theme", theme)
            page.wait_for_timeout(300)  # the chart's first draw
            path = SCREENSHOTS / f"trade-{name}-{theme}.png"
            page.screenshot(path=str(path), full_page=name == "phone")
            assert path.stat().st_size > 10_000  # a picture, not an empty page


def test_when_the_server_goes_away_the_screen_says_so_and_comes_back_resynced(
    stack, market, browser_page
):
    instrument, alice, bob = market
    page = browser_page
    settled(place(bob, instrument, "sell", "5", price="101.00"))
    log_in(page, stack, alice.user.username, instrument.symbol)
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "live")
    expect(page.locator('#asks tr[data-price="101"]')).to_be_visible()
    # when the web server goes away, and the book changes meanwhile
    stack.daphne.stop()
    expect(connection).to_have_attribute("data-state", "reconnecting", timeout=15000)
    settled(place(bob, instrument, "sell", "2", price="100.90"))
    # then, with the server back on its address, the page is live again on its own
    stack.start_web()
    expect(connection).to_have_attribute("data-state", "live", timeout=30000)
    # and its book is the one the matcher holds now, the change made while away included
    expect(page.locator('#asks tr[data-price="100.9"]')).to_be_visible(timeout=15000)
    expect(page.locator('#asks tr[data-price="101"] td').nth(1)).to_have_text("5")


def test_a_tab_that_comes_back_into_view_asks_for_fresh_snapshots(stack, market, browser_page):
    instrument, alice, bob = market
    symbol = instrument.symbol
    page = browser_page
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    log_in(page, stack, alice.user.username, symbol)
    sent.clear()

    def visibility(state: str) -> None:
        page.evaluate(
            """s => {
                const property = { value: s, configurable: true };
                Object.defineProperty(document, "visibilityState", property);
                document.dispatchEvent(new Event("visibilitychange"));
            }""",
            state,
        )

    # while the tab is hidden the book changes; when it is shown again, it subscribes again
    visibility("hidden")
    settled(place(bob, instrument, "sell", "4", price="102.00"))
    visibility("visible")
    expect(page.locator('#asks tr[data-price="102"]')).to_be_visible()
    resubscribed = [json.loads(f) for f in sent if '"subscribe"' in f]
    assert any(f"book.{symbol}" in message["channels"] for message in resubscribed), sent
