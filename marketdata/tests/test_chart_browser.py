"""The chart (`static/js/chart.js`) in Chromium on the real stack: the order path, the stream
worker and daphne, with known trades; the page's own modules, under the site's CSP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import expect

from testing.helpers import place, settled, wait_for
from trading.models import Trade

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.effectiveDirective} ${event.blockedURI}`);
});
"""

MOUNT = """async ([symbol, interval]) => {
    const { MarketStream } = await import("/static/js/marketstream.js");
    const { mountChart } = await import("/static/js/chart.js");
    const element = document.createElement("div");
    element.id = "chart-under-test";
    element.style.width = "800px";
    element.style.height = "400px";
    document.body.appendChild(element);
    window.market = new MarketStream().start();
    window.chart = mountChart(element, { symbol, interval, market: window.market });
    await window.chart.ready();
}"""


def trade(instrument, buyer, seller, price: str, quantity: str) -> None:  # noqa: ANN001
    settled(place(seller, instrument, "sell", quantity, price=price))
    settled(place(buyer, instrument, "buy", quantity, price=price))


def history(symbol: str, interval: str) -> list[dict[str, Any]]:
    response = Client().get("/marketdata/api/candles/", {"symbol": symbol, "interval": interval})
    assert response.status_code == 200, response.content
    return response.json()["candles"]


def drawn(bars: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The endpoint's bars as the chart's candle series holds them (time in seconds)."""
    return [
        {
            "time": bar["start"] / 1000,
            **{key: float(bar[key]) for key in ("open", "high", "low", "close")},
        }
        for bar in bars
    ]


def test_the_chart_shows_history_the_live_bar_fills_and_switches_interval(
    stack, market, browser_page
):
    instrument, alice, bob = market
    symbol = instrument.symbol
    known = [("100.50", "2"), ("101.25", "3"), ("99.75", "1")]
    for price, quantity in known:
        trade(instrument, alice, bob, price, quantity)
    # the stream worker has stored the bars of those trades
    wait_for(
        lambda: sum(bar["trades"] for bar in history(symbol, "1m")) == len(known),
        15,
        f"stored 1m bars of the known trades{stack.logs()}",
    )

    page = browser_page
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    candle_requests: list[str] = []
    page.on(
        "request",
        lambda r: candle_requests.append(r.url) if "/marketdata/api/candles/" in r.url else None,
    )
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(stack.url + "/")
    page.evaluate(MOUNT, [symbol, "1m"])

    def series() -> list[dict[str, float]]:
        return page.evaluate(
            """() => window.chart.candles.data().map(
                ({ time, open, high, low, close }) => ({ time, open, high, low, close }))"""
        )

    # the candle series is the endpoint's history, and there is a volume bar for each candle
    assert candle_requests == [f"{stack.url}/marketdata/api/candles/?symbol={symbol}&interval=1m"]
    wait_for(lambda: series() == drawn(history(symbol, "1m")), 10, "the chart = the history")
    volumes = page.evaluate("() => window.chart.volume.data().map((bar) => bar.value)")
    assert volumes == [float(bar["volume"]) for bar in history(symbol, "1m")]
    assert sum(volumes) == float(sum(Decimal(q) for _, q in known))

    # the attribution the library's licence asks for, next to the chart
    attribution = page.locator("#chart-under-test .tredye-chart__attribution")
    expect(attribution).to_be_visible()
    expect(attribution).to_have_text("Charts by TradingView")
    expect(attribution).to_have_attribute("href", "https://www.tradingview.com/")

    # a further trade at a known price: the live bar closes there, without a reload
    page.evaluate("() => { window.sameDocument = true; }")
    wait_for(
        lambda: (
            page.evaluate("() => window.market.channel(`candles.${window.chart.symbol}.1m`).status")
            == "live"
        ),
        10,
        "the candles channel's snapshot",
    )
    trade(instrument, alice, bob, "102.40", "1")
    try:
        wait_for(lambda: series()[-1]["close"] == 102.40, 10, "the live bar's close")
    except AssertionError:
        raise AssertionError(f"{series()} {problems} {stack.logs()}") from None
    assert page.evaluate("() => window.sameDocument") is True
    assert len(candle_requests) == 1
    assert series()[-1]["high"] >= 102.40

    # the trader's own fills become markers on the candle series, at their bars
    fills = [
        {
            "price": f"{t.price.normalize():f}",
            "quantity": f"{t.quantity.normalize():f}",
            "side": "buy",
            "ts": int(t.executed_at.timestamp() * 1000),
        }
        for t in Trade.objects.filter(instrument=instrument).order_by("seq")
    ]
    assert len(fills) == len(known) + 1
    page.evaluate("(fills) => window.chart.markFills(fills)", fills)
    markers = page.evaluate("() => window.chart.markers()")
    assert len(markers) == len(fills)
    times = {bar["time"] for bar in series()}
    assert all(marker["time"] in times for marker in markers), (markers, times)
    assert [m["text"] for m in markers] == [
        f"B {fill['quantity']} @ {fill['price']}" for fill in fills
    ]

    # another interval: its history is loaded and drawn, the markers follow
    page.evaluate("async () => { window.chart.setInterval('5m'); await window.chart.ready(); }")
    assert candle_requests[-1] == (
        f"{stack.url}/marketdata/api/candles/?symbol={symbol}&interval=5m"
    )
    assert len(candle_requests) == 2
    wait_for(
        lambda: series() == drawn(history(symbol, "5m")),
        10,
        f"the chart = the 5m history{series()} {history(symbol, '5m')}",
    )
    assert page.evaluate("() => window.chart.markers().length") == len(fills)

    # and nothing the page did was refused or failed
    assert page.evaluate("() => window.__csp") == []
    assert problems == []
