"""The streams' state without a database: books, depth views, tapes, 24 h figures."""

from __future__ import annotations

import datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata.stream_state import (
    ASK,
    BID,
    BookMirror,
    DepthView,
    MinuteBar,
    RollingDay,
    Tape,
    levels_parse,
)

D = Decimal

prices = st.integers(min_value=9_900, max_value=10_100).map(lambda p: D(p) / 100)
quantities = st.integers(min_value=0, max_value=5).map(D)  # 0 removes the level
changes = st.lists(
    st.dictionaries(st.tuples(st.sampled_from([BID, ASK]), prices), quantities, max_size=8),
    max_size=40,
)


def apply_view(held: dict, data: dict) -> None:
    """What a client does with a view's update: absolute quantities, 0 removes."""
    for side, rows in ((BID, data["bids"]), (ASK, data["asks"])):
        for price, quantity in rows:
            if D(quantity):
                held[(side, D(price))] = D(quantity)
            else:
                held.pop((side, D(price)), None)


@settings(max_examples=200, deadline=None)
@given(changes=changes, depth=st.sampled_from([1, 5, 10]))
def test_a_views_updates_on_its_snapshot_equal_the_books_top_levels(changes, depth):
    mirror = BookMirror()
    view = DepthView(depth, mirror)
    held = {
        (side, D(p)): D(q)
        for side, rows in ((BID, "bids"), (ASK, "asks"))
        for p, q in view.snapshot_data()[rows]
    }
    chain = view.seq
    for seq, levels in enumerate(changes, start=1):
        mirror.apply(levels)
        mirror.seq = seq
        refreshed = view.refresh(mirror)
        if refreshed is None:
            continue
        prev, data = refreshed
        assert prev == chain  # every update continues the one before it
        chain = view.seq
        apply_view(held, data)
        bids, asks = mirror.top(depth)
        assert held == {(BID, p): q for p, q in bids} | {(ASK, p): q for p, q in asks}
    bids, asks = mirror.top(depth)
    assert held == {(BID, p): q for p, q in bids} | {(ASK, p): q for p, q in asks}


def test_replacing_a_book_returns_the_difference():
    mirror = BookMirror(3, {(BID, D("10")): D(2), (ASK, D("11")): D(1)})
    delta = mirror.replace(9, {(BID, D("10")): D(2), (BID, D("9.5")): D(4)})
    assert delta == {(ASK, D("11")): D(0), (BID, D("9.5")): D(4)}
    assert mirror.seq == 9
    assert mirror.top() == ([(D("10"), D(2)), (D("9.5"), D(4))], [])


def test_bad_levels_are_refused():
    for data in (
        {"bids": [["10", "-1"]], "asks": []},
        {"bids": [["NaN", "1"]], "asks": []},
        {"bids": [[10, "1"]], "asks": []},
        {"bids": "x", "asks": []},
        {"bids": [["0", "1"]], "asks": []},
    ):
        try:
            levels_parse(data)
        except (ValueError, ArithmeticError):
            continue
        raise AssertionError(f"accepted {data}")


def test_a_tape_keeps_the_latest_fifty_and_refuses_old_trades():
    tape = Tape([{"seq": n} for n in range(1, 61)])
    assert tape.seq == 60
    assert [t["seq"] for t in tape.trades] == list(range(11, 61))
    assert not tape.add({"seq": 60})
    assert tape.add({"seq": 61})
    assert tape.snapshot_data()["trades"][-1] == {"seq": 61}


def test_the_24h_figures_come_from_the_bars_of_the_last_day():
    now = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
    day = RollingDay()
    assert day.figures(now)["high_24h"] is None
    minute = datetime.timedelta(minutes=1)
    day.set(now - datetime.timedelta(hours=25), MinuteBar(D(1), D(999), D(1), D(1), D(5)))
    day.set(now - 100 * minute, MinuteBar(D("100"), D("104"), D("99"), D("103"), D("7")))
    day.set(now - minute, MinuteBar(D("103"), D("103"), D("98"), D("102"), D("3")))
    assert day.figures(now) == {
        "high_24h": "104",
        "low_24h": "98",
        "volume_24h": "10",
        "change_24h": "2",
        "change_pct_24h": "2",
    }


def test_the_24h_figures_follow_the_newest_bar_as_it_changes_and_a_new_minute():
    now = datetime.datetime(2026, 11, 28, 12, 0, 30, tzinfo=datetime.UTC)
    minute = datetime.timedelta(minutes=1)
    day = RollingDay()
    day.set(now - minute, MinuteBar(D("10"), D("11"), D("9"), D("10.5"), D("2")))
    assert day.figures(now)["high_24h"] == "11"
    # the same (newest) bar changes within the second: the figures follow at once
    day.set(now - minute, MinuteBar(D("10"), D("12"), D("9"), D("11.5"), D("3")))
    assert day.figures(now) == {
        "high_24h": "12",
        "low_24h": "9",
        "volume_24h": "3",
        "change_24h": "1.5",
        "change_pct_24h": "15",
    }
    # a new minute: the older bar joins the rest, the new one is folded in
    day.set(now, MinuteBar(D("11.5"), D("11.6"), D("8"), D("8.5"), D("1")))
    assert day.figures(now) == {
        "high_24h": "12",
        "low_24h": "8",
        "volume_24h": "4",
        "change_24h": "-1.5",
        "change_pct_24h": "-15",
    }
