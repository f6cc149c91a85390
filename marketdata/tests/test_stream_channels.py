"""The streams end to end, on the real services: orders through the relay and the matcher,
the stream worker, daphne, and a client that checks every chain (`testing.stream_client`).

What a client holds is compared with the matcher's committed book (PostgreSQL), which is the
engine's book as of its last batch.
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client

from marketdata.selectors import book_snapshot
from testing.helpers import place, settled, wait_for
from testing.stream_client import StreamTestClient
from trading.models import Order, Trade

pytestmark = pytest.mark.django_db(transaction=True)

DEPTH = 10


def engine_top(instrument) -> tuple[list, list]:  # noqa: ANN001
    book = book_snapshot(instrument, depth=DEPTH)
    return book.bids, book.asks


def holds_engine_book(client: StreamTestClient, channel: str, instrument) -> bool:  # noqa: ANN001
    view = client.channels[channel]
    return not view.resyncing and view.top() == engine_top(instrument)


def seeded_orders(instrument, accounts, count: int, seed: int) -> Order:  # noqa: ANN001
    """`count` limit orders around 100.00 from two accounts, many of them crossing."""
    rng = random.Random(seed)
    last = None
    for _ in range(count):
        side = rng.choice(["buy", "sell"])
        account = accounts[0] if side == "buy" else accounts[1]
        price = Decimal(rng.randint(9900, 10100)) / 100
        if side == "buy":
            price -= Decimal("0.30")  # most rest; some cross
        else:
            price += Decimal("0.30")
        last = place(account, instrument, side, str(rng.randint(1, 20)), price=str(price))
    assert last is not None
    return last


def test_a_client_holds_the_engines_top_levels_and_repairs_a_dropped_update(stack, market):
    instrument, alice, bob = market
    channel = f"book.{instrument.symbol}"
    # given two clients of one book, the second of which will lose one update
    steady = StreamTestClient(stack.url)
    lossy = StreamTestClient(stack.url)
    for client in (steady, lossy):
        client.subscribe(channel, depth=DEPTH)
        assert client.pump(10, lambda c=client: not c.channels[channel].resyncing), stack.logs()
    lossy.drop.add(channel)
    # when a seeded stream of orders goes through the matcher
    settled(seeded_orders(instrument, (alice, bob), 150, seed=12), timeout_s=60)
    # then the steady client holds exactly the engine's top levels, and never saw a gap
    assert steady.pump(20, lambda: holds_engine_book(steady, channel, instrument)), (
        steady.channels[channel].top(),
        engine_top(instrument),
        stack.logs(),
    )
    assert steady.channels[channel].gaps == 0
    assert Trade.objects.filter(instrument=instrument).exists()  # the stream crossed, too
    # and the lossy client, at the next update after the one it lost (a new best bid), saw
    # its gap, subscribed again, and holds the same book
    best_bid = engine_top(instrument)[0][0][0]
    settled(place(alice, instrument, "buy", "1", price=str(best_bid + Decimal("0.01"))))
    assert lossy.pump(20, lambda: holds_engine_book(lossy, channel, instrument)), stack.logs()
    assert steady.pump(20, lambda: holds_engine_book(steady, channel, instrument))
    assert lossy.channels[channel].gaps == 1
    assert lossy.resubscribed == [channel]
    assert lossy.channels[channel].snapshots == 2
    steady.close()
    lossy.close()


def test_a_restarted_stream_worker_carries_on_without_a_gap(stack, market):
    instrument, alice, bob = market
    channel, tape = f"book.{instrument.symbol}", f"trades.{instrument.symbol}"
    before = StreamTestClient(stack.url)
    before.subscribe(channel, tape, depth=DEPTH)
    assert before.pump(10, lambda: not before.channels[channel].resyncing), stack.logs()
    settled(seeded_orders(instrument, (alice, bob), 40, seed=3), timeout_s=60)
    # when the stream worker stops while orders go on, and a new one starts
    stack.stream.stop()
    settled(seeded_orders(instrument, (alice, bob), 40, seed=4), timeout_s=60)
    stack.stream = stack.start_stream()
    settled(seeded_orders(instrument, (alice, bob), 40, seed=5), timeout_s=60)
    # then the client that stayed holds the engine's book, its chain unbroken
    assert before.pump(30, lambda: holds_engine_book(before, channel, instrument)), (
        before.channels[channel].top(),
        engine_top(instrument),
        stack.logs(),
    )
    assert before.channels[channel].gaps == 0
    # and a client that subscribes now gets a snapshot the updates after it continue
    after = StreamTestClient(stack.url)
    after.subscribe(channel, depth=DEPTH)
    assert after.pump(10, lambda: not after.channels[channel].resyncing), stack.logs()
    settled(seeded_orders(instrument, (alice, bob), 30, seed=6), timeout_s=60)
    for client in (before, after):
        assert client.pump(20, lambda c=client: holds_engine_book(c, channel, instrument))
        assert client.channels[channel].gaps == 0
    # and the tape ends with the latest trades, numbered without a hole
    trades = list(Trade.objects.filter(instrument=instrument).order_by("-seq")[:50])
    assert before.pump(10, lambda: before.channels[tape].seq == trades[0].seq)
    assert [t["seq"] for t in before.channels[tape].trades] == [t.seq for t in reversed(trades)]
    before.close()
    after.close()


def session_cookie(user) -> str:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_private_channels_reach_their_own_user_only(stack, market):
    instrument, alice, bob = market
    alices = StreamTestClient(stack.url, cookie=session_cookie(alice.user))
    bobs = StreamTestClient(stack.url, cookie=session_cookie(bob.user))
    anonymous = StreamTestClient(stack.url)
    # an anonymous socket, or one naming another account, is refused
    anonymous.subscribe("orders")
    alices.subscribe(f"orders.{bob.pk}")
    assert anonymous.pump(5, lambda: bool(anonymous.errors()))
    assert alices.pump(5, lambda: bool(alices.errors()))
    assert anonymous.errors()[0]["code"] == "forbidden"
    assert alices.errors()[0]["code"] == "forbidden"
    del alices.channels[f"orders.{bob.pk}"], anonymous.channels["orders"]
    for client in (alices, bobs):
        client.subscribe("orders", "balances", "positions")
        assert client.pump(10, lambda c=client: not c.channels["orders"].resyncing)
    # when alice rests an order, then bob fills part of it
    rested = settled(place(alice, instrument, "buy", "5", price="99.00"))
    settled(place(bob, instrument, "sell", "2", price="99.00"))
    # then alice sees her order partly filled, her fill, and her balances and position move
    assert alices.pump(
        15,
        lambda: alices.channels["orders"].orders.get(rested.pk, {}).get("filled_quantity") == "2",
    ), stack.logs()
    fills = [f for m in alices.channels["orders"].messages for f in m["data"].get("fills", ())]
    assert [(f["side"], f["quantity"], f["price"]) for f in fills] == [("buy", "2", "99")]
    assert alices.pump(10, lambda: alices.channels["positions"].latest is not None)
    positions = alices.channels["positions"].latest["positions"]
    assert [(p["symbol"], p["quantity"]) for p in positions] == [(instrument.symbol, "2")]
    balances = {b["asset"]: b for b in alices.channels["balances"].latest["balances"]}
    assert Decimal(balances["USD"]["held"]) > 0  # the open 3 still hold funds
    # and bob's socket never carried one of alice's orders, nor alice's one of bob's
    assert bobs.pump(5, lambda: bool(bobs.channels["orders"].messages[1:]))
    bob_ids = set(Order.objects.filter(account=bob).values_list("pk", flat=True))
    alice_ids = set(Order.objects.filter(account=alice).values_list("pk", flat=True))
    seen = {
        name: {o["id"] for m in client.channels["orders"].messages for o in m["data"]["orders"]}
        for name, client in (("alice", alices), ("bob", bobs))
    }
    assert seen["alice"]
    assert seen["alice"] <= alice_ids
    assert seen["bob"]
    assert seen["bob"] <= bob_ids
    for client in (alices, bobs, anonymous):
        client.close()


def test_candles_from_known_trades_live_and_from_history(stack, market):
    instrument, alice, bob = market
    symbol = instrument.symbol
    watcher = StreamTestClient(stack.url)
    watcher.subscribe(f"candles.{symbol}.1m", f"candles.{symbol}.1h")
    watcher.pump(2)
    known = [("100.50", "2"), ("101.25", "3"), ("99.75", "1"), ("100.10", "4")]
    for price, quantity in known:
        settled(place(bob, instrument, "sell", quantity, price=price))
        settled(place(alice, instrument, "buy", quantity, price=price))
    trades = list(Trade.objects.filter(instrument=instrument).order_by("seq"))
    assert [(t.price, t.quantity) for t in trades] == [(Decimal(p), Decimal(q)) for p, q in known]

    def expected(interval_s: int) -> dict[int, tuple[str, str, str, str, str]]:
        """Open, high, low, close, volume per bar, worked out here from the trades."""
        bars: dict[int, list[Trade]] = {}
        for trade in trades:
            stamp = int(trade.executed_at.timestamp())
            bars.setdefault((stamp - stamp % interval_s) * 1000, []).append(trade)
        return {
            start: (
                f"{group[0].price.normalize():f}",
                f"{max(t.price for t in group).normalize():f}",
                f"{min(t.price for t in group).normalize():f}",
                f"{group[-1].price.normalize():f}",
                f"{sum(t.quantity for t in group).normalize():f}",
            )
            for start, group in bars.items()
        }

    def shown(bar: dict) -> tuple[str, str, str, str, str]:
        return (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])

    for interval, seconds in (("1m", 60), ("1h", 3600)):
        view = watcher.channels[f"candles.{symbol}.{interval}"]
        want = expected(seconds)

        def live(view=view, interval=interval, want=want) -> dict:  # noqa: ANN001
            return {o: shown(b) for (i, o), b in view.bars.items() if i == interval and o in want}

        # live: the bars the socket carried end where the trades say
        assert watcher.pump(15, lambda live=live, want=want: live() == want), (
            live(),
            want,
            stack.logs(),
        )
        # from history: the stored bars (saved by the stream worker) are the same
        start = datetime.datetime.fromtimestamp(min(want) / 1000 - 1, tz=datetime.UTC)

        def history(interval=interval, start=start) -> dict:  # noqa: ANN001
            response = Client().get(
                "/marketdata/api/candles/",
                {"symbol": symbol, "interval": interval, "from": start.isoformat()},
            )
            assert response.status_code == 200, response.content
            return response.json()

        def stored(interval=interval, want=want, history=history) -> bool:  # noqa: ANN001
            bars = history()["candles"]
            return {
                b["start"]: (b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in bars
            } == want

        wait_for(stored, 10, f"stored {interval} bars equal to the trades'")
    watcher.close()


@pytest.mark.browser
def test_the_browser_library_holds_the_engines_book_on_the_real_stack(stack, market, browser_page):
    instrument, alice, bob = market
    page = browser_page
    page.goto(stack.url + "/")
    # the page's own module, on the page's own origin
    page.evaluate(
        """async ([channel, depth]) => {
            const { MarketStream } = await import("/static/js/marketstream.js");
            window.gaps = 0;
            const market = new MarketStream({ onGap: () => { window.gaps += 1; } });
            market.start();
            window.book = market.subscribe(channel, { depth });
            window.market = market;
        }""",
        [f"book.{instrument.symbol}", DEPTH],
    )

    def shown() -> tuple[list, list] | None:
        state = page.evaluate("() => window.book.status === 'live' ? window.book.levels() : null")
        if state is None:
            return None
        return (
            [(Decimal(p), Decimal(q)) for p, q in state["bids"]],
            [(Decimal(p), Decimal(q)) for p, q in state["asks"]],
        )

    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.on("pageerror", lambda error: console.append(str(error)))
    try:
        wait_for(lambda: shown() is not None, 10, "the book's snapshot in the page")
    except AssertionError:
        health = page.evaluate("() => JSON.stringify(window.market.health())")
        raise AssertionError(f"{health} {console} {stack.logs()}") from None
    settled(seeded_orders(instrument, (alice, bob), 60, seed=21), timeout_s=60)
    wait_for(lambda: shown() == engine_top(instrument), 20, "the page's book = the engine's")
    # across a restart of the stream worker too
    stack.stream.stop()
    settled(seeded_orders(instrument, (alice, bob), 30, seed=22), timeout_s=60)
    stack.stream = stack.start_stream()
    settled(seeded_orders(instrument, (alice, bob), 30, seed=23), timeout_s=60)
    wait_for(
        lambda: shown() == engine_top(instrument),
        30,
        f"the page's book after a restart{stack.logs()}",
    )
    assert page.evaluate("() => window.gaps") == 0
