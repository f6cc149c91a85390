"""Candles: the pure builder (no database), then the store, the backfill and the endpoint on
the real database."""

from __future__ import annotations

import datetime
import io
import random
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata import candle_store
from marketdata.candles import INTERVALS, Bar, CandleBuilder, TradeIn, bucket_start
from marketdata.models import Candle

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


# --- the store, the backfill and the endpoint, on the real database ------------------------

CANDLES_URL = "/marketdata/api/candles/"


def epoch_ms(seconds: int) -> int:
    """The epoch milliseconds of T0 + `seconds`."""
    return int(at(seconds).timestamp()) * 1000


def stored(symbol: str) -> list[tuple]:
    return sorted(
        Candle.objects.filter(instrument__symbol=symbol).values_list(
            "interval", "start", "open", "high", "low", "close", "volume", "quote_volume",
            "trades", "last_trade_seq",
        )
    )  # fmt: skip


@pytest.fixture
def traded(make_instrument, make_trades):
    """An instrument with the known trades in PostgreSQL."""
    market = make_instrument()
    make_trades(market, [(t.seq, str(t.price), str(t.quantity), t.executed_at) for t in KNOWN])
    return market


def test_the_model_has_the_builder_intervals():
    assert [value for value, _ in Candle.Interval.choices] == list(INTERVALS)


def test_backfill_and_the_endpoint_give_the_known_bars(traded, client):
    out = io.StringIO()
    call_command("candles_backfill", "--symbol", traded.symbol, stdout=out)
    assert f"{traded.symbol}: 5 trades, 7 bars" in out.getvalue()  # 3 1s, 2 1m, 5m, 1h
    response = client.get(CANDLES_URL, {"symbol": traded.symbol, "interval": "1s"})
    assert response.status_code == 200
    assert response.json() == {
        "symbol": traded.symbol,
        "interval": "1s",
        "candles": [
            {"start": epoch_ms(0), "open": "100", "high": "101.5", "low": "99.75",
             "close": "99.75", "volume": "6", "quote_volume": "600.75", "trades": 3},
            {"start": epoch_ms(1), "open": "100.25", "high": "100.25", "low": "100.25",
             "close": "100.25", "volume": "4", "quote_volume": "401", "trades": 1},
            {"start": epoch_ms(61), "open": "102", "high": "102", "low": "102",
             "close": "102", "volume": "1", "quote_volume": "102", "trades": 1},
        ],
    }  # fmt: skip
    minutes = client.get(
        CANDLES_URL,
        {"symbol": traded.symbol, "interval": "1m", "from": "2026-11-27T10:00:30Z",
         "to": str(epoch_ms(120))},
    ).json()["candles"]  # fmt: skip
    fields = ("start", "open", "high", "low", "close", "volume")
    assert [tuple(c[f] for f in fields) for c in minutes] == [
        (epoch_ms(0), "100", "101.5", "99.75", "100.25", "10"),
        (epoch_ms(60), "102", "102", "102", "102", "1"),
    ]


def test_applying_trades_live_equals_the_backfill_and_twice_changes_nothing(traded):
    candle_store.candles_apply(symbol=traded.symbol, trades=KNOWN[:2])
    candle_store.candles_apply(symbol=traded.symbol, trades=KNOWN[1:4])
    candle_store.candles_apply(symbol=traded.symbol, trades=[KNOWN[4]])
    live = stored(traded.symbol)
    again = candle_store.candles_apply(symbol=traded.symbol, trades=KNOWN)
    assert (again.changed, again.closed, again.applied) == ([], [], 0)
    assert stored(traded.symbol) == live
    candle_store.candles_backfill(symbol=traded.symbol)
    assert stored(traded.symbol) == live
    assert len(live) == 7


def test_backfill_since_keeps_earlier_bars_and_rebuilds_the_rest(make_instrument, make_trades):
    market = make_instrument()
    hour = 3600
    rows = [(1, "10", "1", at(5)), (2, "11", "2", at(hour + 5)), (3, "12", "3", at(hour + 70))]
    make_trades(market, rows)
    candle_store.candles_backfill(symbol=market.symbol)
    whole = stored(market.symbol)
    Candle.objects.filter(instrument=market).update(volume=D("999"))
    out = io.StringIO()
    since = at(hour + 65).isoformat()
    call_command("candles_backfill", "--symbol", market.symbol, "--since", since, stdout=out)
    # From the start of the hour of --since every bar is rebuilt whole; those before are kept.
    kept = [row for row in whole if row[1] < at(hour)]
    assert len(kept) == 4
    assert stored(market.symbol) == sorted(
        [(*row[:6], D("999"), *row[7:]) for row in kept] + [row for row in whole if row not in kept]
    )
    assert f"{market.symbol}: 2 trades, 6 bars" in out.getvalue()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"interval": "1m"}, "invalid_symbol"),
        ({"symbol": "NOPE", "interval": "1m"}, "invalid_symbol"),
        ({"symbol": "S", "interval": "2m"}, "invalid_interval"),
        ({"symbol": "S"}, "invalid_interval"),
        ({"symbol": "S", "interval": "1m", "from": "yesterday"}, "invalid_time"),
        ({"symbol": "S", "interval": "1m", "to": "1.5"}, "invalid_time"),
        ({"symbol": "S", "interval": "1m", "from": "2026-11-27T10:05Z", "to": "2026-11-27T10:00Z"},
         "invalid_range"),
        ({"symbol": "S", "interval": "1s", "from": "2026-11-27T10:00", "to": "2026-11-27T10:16:41"},
         "range_too_large"),  # 1,001 bars; no offset: UTC
        ({"symbol": "S", "interval": "1m", "limit": "5"}, "unknown_parameter"),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused_with_a_code(traded, client, query, code):
    if query.get("symbol") == "S":
        query["symbol"] = traded.symbol
    response = client.get(CANDLES_URL, query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    if code == "range_too_large":
        assert "at most 1000 bars per call" in response.json()["error"]["detail"]


def test_a_range_of_exactly_1000_bars_is_served_and_the_default_is_the_latest(traded, client):
    query = {
        "symbol": traded.symbol,
        "interval": "1s",
        "from": str(epoch_ms(0)),
        "to": str(epoch_ms(1000)),
    }
    assert client.get(CANDLES_URL, query).status_code == 200
    candle_store.candles_backfill(symbol=traded.symbol)
    assert len(client.get(CANDLES_URL, query).json()["candles"]) == 3
    only_to = client.get(
        CANDLES_URL, {"symbol": traded.symbol, "interval": "1s", "to": str(epoch_ms(61))}
    )
    assert [c["start"] for c in only_to.json()["candles"]] == [epoch_ms(0), epoch_ms(1)]


def test_apply_and_backfill_refuse_an_unknown_symbol(db):
    with pytest.raises(candle_store.UnknownSymbol):
        candle_store.candles_apply(symbol="NOPE", trades=KNOWN)
    with pytest.raises(CommandError, match="--symbol: no instrument 'NOPE'"):
        call_command("candles_backfill", "--symbol", "NOPE")
    with pytest.raises(CommandError, match="--since takes an ISO 8601 time"):
        call_command("candles_backfill", "--since", "last tuesday")
    assert not Candle.objects.exists()


def test_the_endpoint_answers_any_query_with_bars_or_a_coded_400(traded, client):
    values = st.one_of(
        st.text(max_size=40),
        st.sampled_from(["1s", "1m", "5m", "1h", "0", "-1", "9" * 15, "2026-11-27T10:00Z"]),
    )
    keys = st.sampled_from(["symbol", "interval", "from", "to", "x"])

    @settings(max_examples=60, deadline=None)
    @given(query=st.dictionaries(keys, values, max_size=5))
    def read(query: dict[str, str]) -> None:  # read-only: one database for every example
        query.setdefault("symbol", traded.symbol)
        response = client.get(CANDLES_URL, query)
        assert response.status_code in (200, 400), response.content
        body = response.json()
        assert "candles" in body if response.status_code == 200 else body["error"]["code"]

    read()


def test_candles_are_read_only_in_the_admin(traded, client):
    candle_store.candles_backfill(symbol=traded.symbol)
    boss = get_user_model().objects.create_superuser("candle-boss", password="x")  # noqa: S106
    client.force_login(boss)
    listing = client.get("/admin/marketdata/candle/", {"q": traded.symbol})
    assert listing.status_code == 200
    assert traded.symbol in listing.content.decode()
    bar = Candle.objects.filter(instrument=traded).first()
    assert bar is not None
    assert client.get("/admin/marketdata/candle/add/").status_code == 403
    deleting = client.post(f"/admin/marketdata/candle/{bar.pk}/delete/", {"post": "yes"})
    assert deleting.status_code == 403
    assert Candle.objects.filter(pk=bar.pk).exists()


def test_without_a_range_the_latest_500_and_from_alone_the_first_500(make_instrument, client):
    market = make_instrument()
    trades = [trade(seq, "10", "1", seq) for seq in range(1, 602)]  # one 1s bar per second
    changes = candle_store.candles_apply(symbol=market.symbol, trades=trades)
    assert changes.applied == 601
    query = {"symbol": market.symbol, "interval": "1s"}
    latest = client.get(CANDLES_URL, query).json()["candles"]
    assert [c["start"] for c in latest] == [epoch_ms(s) for s in range(102, 602)]
    first = client.get(CANDLES_URL, query | {"from": str(epoch_ms(50))}).json()["candles"]
    assert [c["start"] for c in first] == [epoch_ms(s) for s in range(50, 550)]
    hour = client.get(CANDLES_URL, query | {"interval": "1h"}).json()["candles"]
    assert [(c["volume"], c["trades"]) for c in hour] == [("601", 601)]
