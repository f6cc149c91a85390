"""Candles: the pure builder (no database), then the store, the backfill and the endpoint on
the real database."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata.candles import INTERVALS, Bar, CandleBuilder, TradeIn, bucket_start

D = Decimal
T0 = datetime.datetime(2026, 11, 27, 10, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def trade(seq: int, price: str, quantity: str, seconds: float) -> TradeIn:
    return TradeIn(seq=seq, price=D(price), quantity=D(quantity), executed_at=at(seconds))


# A known list: two 1s bars and one 1m bar at 10:00, then a 1s and a 1m bar at 10:01.
KNOWN = [
    trade(1, "100.00", "2", 0.1),
    trade(2, "101.50", "1", 0.5),
    trade(3, "99.75", "3", 0.9),
    trade(4, "100.25", "4", 1.2),
    trade(5, "102.00", "1", 61.0),
]


def ohlcv(bar: Bar) -> tuple:
    return (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.quote_volume, bar.trades)


def everything(builder: CandleBuilder, closed: list[Bar]) -> list[Bar]:
    """Every bar a run made: those it closed, then the forming ones."""
    forming = [bar for bar in builder.forming.values() if bar is not None]
    return sorted(closed + forming, key=lambda b: (b.interval, b.start))


# --- the pure builder ----------------------------------------------------------------------


def test_bucket_start_floors_to_the_interval_from_the_epoch():
    ts = datetime.datetime(2026, 11, 27, 10, 7, 59, 999_999, tzinfo=datetime.UTC)
    assert bucket_start(ts, "1s") == ts.replace(microsecond=0)
    assert bucket_start(ts, "1m") == ts.replace(second=0, microsecond=0)
    assert bucket_start(ts, "5m") == ts.replace(minute=5, second=0, microsecond=0)
    assert bucket_start(ts, "1h") == ts.replace(minute=0, second=0, microsecond=0)
    assert set(INTERVALS) == {"1s", "1m", "5m", "1h"}


def test_bucket_start_refuses_an_unknown_interval_and_a_naive_time():
    with pytest.raises(ValueError, match="unknown interval '2m'; use one of 1s, 1m, 5m, 1h"):
        bucket_start(T0, "2m")
    with pytest.raises(ValueError, match="aware"):
        bucket_start(T0.replace(tzinfo=None), "1m")


def test_a_known_list_of_trades_gives_the_right_bars():
    builder = CandleBuilder("AAPL")
    changes = builder.apply(KNOWN)
    bars = everything(builder, changes.closed)
    by_key = {(b.interval, b.start): b for b in bars}
    assert ohlcv(by_key[("1s", at(0))]) == (
        D("100.00"), D("101.50"), D("99.75"), D("99.75"), D("6"), D("600.7500"), 3,
    )  # fmt: skip
    assert ohlcv(by_key[("1s", at(1))]) == (
        D("100.25"), D("100.25"), D("100.25"), D("100.25"), D("4"), D("401.00"), 1,
    )  # fmt: skip
    assert ohlcv(by_key[("1m", at(0))]) == (
        D("100.00"), D("101.50"), D("99.75"), D("100.25"), D("10"), D("1001.7500"), 4,
    )  # fmt: skip
    assert ohlcv(by_key[("1m", at(60))])[:4] == (D("102.00"),) * 4
    assert ohlcv(by_key[("1h", at(0))])[4:] == (D("11"), D("1103.7500"), 5)
    assert by_key[("1h", at(0))].last_trade_seq == 5
    # 1s closed twice, 1m once; 5m and 1h are still forming.
    assert [(b.interval, b.start) for b in changes.closed] == [
        ("1s", at(0)), ("1m", at(0)), ("1s", at(1)),
    ]  # fmt: skip
    assert changes.applied == 5


def test_changes_name_the_bars_a_batch_touched_and_closed():
    builder = CandleBuilder("AAPL")
    builder.apply(KNOWN[:2])
    changes = builder.apply([KNOWN[2]])
    assert {(b.interval, b.start) for b in changes.changed} == {
        ("1s", at(0)), ("1m", at(0)), ("5m", at(0)), ("1h", at(0)),
    }  # fmt: skip
    assert changes.closed == []
    changes = builder.apply([KNOWN[3]])
    assert [(b.interval, b.close, b.trades) for b in changes.closed] == [("1s", D("99.75"), 3)]
    # What was reported is a copy: later trades do not change it.
    reported = next(b for b in changes.changed if b.interval == "1h")
    builder.apply([KNOWN[4]])
    assert (reported.trades, reported.close) == (4, D("100.25"))
    assert builder.forming["1h"] is not None
    assert builder.forming["1h"].trades == 5


def test_a_duplicate_or_late_trade_is_ignored():
    builder = CandleBuilder("AAPL")
    builder.apply(KNOWN)
    changes = builder.apply([KNOWN[1], KNOWN[4]])
    assert (changes.changed, changes.closed, changes.applied) == ([], [], 0)


def test_a_trade_stamped_before_the_forming_bar_counts_in_it():
    builder = CandleBuilder("AAPL", intervals=["1s"])
    builder.apply([trade(1, "10", "1", 5.0), trade(2, "11", "1", 4.0)])  # the clock stepped back
    (bar,) = everything(builder, [])
    assert (bar.start, bar.close, bar.trades) == (at(5), D("11"), 2)


def test_a_seeded_builder_carries_on_from_the_stored_bars():
    whole = CandleBuilder("AAPL")
    closed = whole.apply(KNOWN).closed
    first = CandleBuilder("AAPL")
    first.apply(KNOWN[:3])
    stored = [bar for bar in first.forming.values() if bar is not None]
    second = CandleBuilder("AAPL", bars=stored)
    later = second.apply(KNOWN)  # the first three again, ignored by seq
    assert everything(second, later.closed) == everything(whole, closed)


@st.composite
def trade_lists(draw: st.DrawFn) -> list[TradeIn]:
    count = draw(st.integers(min_value=1, max_value=40))
    seconds = 0.0
    trades = []
    for seq in range(1, count + 1):
        # Mostly forward in time, across 1s/1m/5m buckets; now and then a step back.
        seconds += draw(st.sampled_from([0.0, 0.3, 0.9, 1.7, 59.0, 301.0, -0.5]))
        price = D(draw(st.integers(min_value=1, max_value=50_000))) / 100
        quantity = D(draw(st.integers(min_value=1, max_value=10_000))) / 1000
        trades.append(TradeIn(seq=seq, price=price, quantity=quantity, executed_at=at(seconds)))
    return trades


def run(deliveries: list[list[TradeIn]]) -> list[Bar]:
    builder = CandleBuilder("X")
    closed: list[Bar] = []
    for batch in deliveries:
        closed += builder.apply(batch).closed
    return everything(builder, closed)


@settings(max_examples=150, deadline=None)
@given(trades=trade_lists(), seed=st.integers(min_value=0, max_value=2**32))
def test_one_by_one_equals_all_at_once_whatever_the_delivery(trades, seed):
    rng = random.Random(seed)
    at_once = run([rng.sample(trades, len(trades))])  # one batch, in any order
    one_by_one = run([[t] for t in trades])
    # Chunks, each shuffled, with earlier trades delivered again (duplicates).
    chunks: list[list[TradeIn]] = []
    i = 0
    while i < len(trades):
        size = rng.randint(1, 5)
        chunk = trades[i : i + size] + rng.sample(trades[: i + 1], min(i + 1, rng.randint(0, 3)))
        rng.shuffle(chunk)
        chunks.append(chunk)
        i += size
    assert one_by_one == at_once == run(chunks)


@settings(max_examples=100, deadline=None)
@given(trades=trade_lists())
def test_bars_agree_with_a_plain_grouping_when_time_only_goes_forward(trades):
    forward = [t for t in trades if all(t.executed_at >= s.executed_at for s in trades[: t.seq])]
    bars = run([forward])
    for interval in INTERVALS:
        groups: dict[datetime.datetime, list[TradeIn]] = {}
        for t in forward:
            groups.setdefault(bucket_start(t.executed_at, interval), []).append(t)
        expected = [
            (
                start,
                group[0].price,
                max(t.price for t in group),
                min(t.price for t in group),
                group[-1].price,
                sum((t.quantity for t in group), D(0)),
                sum((t.price * t.quantity for t in group), D(0)),
                len(group),
            )
            for start, group in sorted(groups.items())
        ]
        assert [(b.start, *ohlcv(b)) for b in bars if b.interval == interval] == expected
