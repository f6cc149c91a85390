"""The watchlist in a real headless Chromium, fed by the real feed, Kafka, worker and daphne."""

import re
import time

import pytest
from playwright.sync_api import expect

from testing.helpers import manage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_watchlist_shows_moving_prices_within_five_seconds(
    make_instrument, asgi_server, stream_process, start_test_process, browser_page
):
    # given listed instruments and a running feed
    make_instrument("AAPL", price="229.87")
    make_instrument("MSFT", price="417.12")
    feed = start_test_process("feed", *manage("run_feed", "--rate", "40", "--seed", "11"))
    page = browser_page
    # when a trader opens the page
    page.goto(asgi_server + "/")
    cell = page.locator('tr[data-symbol="AAPL"] [data-field="last"]')
    # then the connection shows live, and AAPL's last price changes at least twice in 5 s
    page.locator('#connection[data-state="live"]').wait_for(timeout=5000)
    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(seen) < 2:
        text = cell.text_content().strip()
        if re.fullmatch(r"\d+\.\d{2}", text):
            seen.add(text)
        page.wait_for_timeout(50)
    assert len(seen) >= 2, f"AAPL prices seen: {seen}\n{feed.output()}\n{stream_process.output()}"
    # and the platform reports nothing degraded once the worker has seen the feed
    expect(page.locator("#platform-status")).to_be_hidden(timeout=3000)


def test_the_page_says_reconnecting_when_the_server_goes_away(
    make_instrument, asgi_server, browser_page
):
    make_instrument("AAPL", price="200.00")
    page = browser_page
    page.goto(asgi_server + "/")
    page.locator('#connection[data-state="live"]').wait_for(timeout=5000)
    # the socket drops (as when daphne restarts): the indicator must not keep saying live
    page.evaluate("window.tredyeStream.socket.close()")
    page.locator('#connection[data-state="reconnecting"]').wait_for(timeout=2000)
    # and the client reconnects by itself with backoff
    page.locator('#connection[data-state="live"]').wait_for(timeout=10000)


def test_the_page_says_orders_are_queued_when_the_matcher_does_not_keep_up(
    make_instrument, asgi_server, stream_process, browser_page, make_queued_command
):
    from django.utils import timezone

    from trading.models import Outbox

    # given a command accepted 30 s ago that no matcher has applied
    make_instrument("AAPL", price="200.00")
    stuck = make_queued_command(age_s=30)
    page = browser_page
    # when a trader opens the page, then it says so in words
    page.goto(asgi_server + "/")
    banner = page.locator("#platform-status")
    expect(banner).to_contain_text(
        "Orders are queued: the matching service is not keeping up.", timeout=10000
    )
    # and once the command is applied it stops saying so (prices stay stale: no feed here)
    Outbox.objects.filter(pk=stuck.pk).update(applied_at=timezone.now())
    expect(banner).not_to_contain_text("Orders are queued", timeout=10000)
