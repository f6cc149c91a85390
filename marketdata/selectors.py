"""Reads for market data: instruments the feed prices, the latest ticker snapshots, the
public snapshots of a book and its trades, and what the stream worker and the sockets start
their channels from (a book with its delta number, trades, a day of bars, an account's open
orders, balances and positions)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from marketdata import sql
from marketdata.feed import Quote, SimulatedInstrument, quantum, to_ticks
from marketdata.models import PriceModel
from trading.messages import epoch_ms
from trading.models import BookState, Instrument, Order, Position, StreamSequence, Trade
from tredye import kafka


def active_instruments() -> list[Instrument]:
    """Return the instruments that have a reference price: every one not closed."""
    return list(
        Instrument.objects.exclude(status=Instrument.Status.CLOSED)
        .select_related("base", "quote")
        .order_by("symbol")
    )


def active_symbols() -> set[str]:
    return {i.symbol for i in active_instruments()}


def simulation_states(*, symbols: list[str] | None = None) -> list[SimulatedInstrument]:
    """Return the random-walk state of each active instrument, resuming its last price.

    Raises PriceModel.DoesNotExist naming an instrument that has no price model.
    """
    models = PriceModel.objects.select_related("instrument").exclude(
        instrument__status=Instrument.Status.CLOSED
    )
    if symbols is not None:
        models = models.filter(instrument__symbol__in=symbols)
    states = []
    for model in models.order_by("instrument__symbol"):
        tick = quantum(model.instrument.tick_size)
        price = model.last_price or model.initial_price
        # A new day (UTC) opens a new session: change is measured from where it started.
        same_day = model.updated_at.date() == timezone.now().date()
        session_open = (model.session_open if same_day else None) or price
        states.append(
            SimulatedInstrument(
                symbol=model.instrument.symbol,
                tick_size=tick,
                lot_size=quantum(model.instrument.lot_size),
                annual_volatility=float(model.annual_volatility),
                spread_bps=model.spread_bps,
                typical_size=model.typical_size,
                price_ticks=to_ticks(price, tick),
                open_ticks=to_ticks(session_open, tick),
            )
        )
    return states


def snapshot_key() -> str:
    """The Redis hash holding the latest message of every ticker channel."""
    return f"{settings.KAFKA_TOPIC_PREFIX}snapshot"


def status_key() -> str:
    return f"{settings.KAFKA_TOPIC_PREFIX}status"


def ticker_snapshots(redis_client) -> dict[str, dict]:  # noqa: ANN001 - redis.Redis
    """Return symbol -> latest ticker data, from the stream worker's Redis snapshot."""
    raw = redis_client.hgetall(snapshot_key())
    snapshots = {}
    for channel, message in raw.items():
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if channel.startswith("ticker."):
            snapshots[channel.removeprefix("ticker.")] = json.loads(message)["data"]
    return snapshots


class SavedTicker(NamedTuple):
    """A ticker as the feed last saved it: its time (epoch ms, when the feed saved the price:
    the age a client shows) and the data, shaped as the stream's `ticker` data."""

    ts: int
    data: dict[str, str]


def ticker_snapshots_saved() -> dict[str, SavedTicker]:
    """Return symbol -> the ticker from the prices the feed last saved in PostgreSQL.

    The fallback while Redis (and with it the live stream and its snapshot) is away: the feed
    saves each symbol's last price and session open every couple of seconds. Bid and ask are
    the price model's spread around the last price, as the simulator quotes them
    (`feed.Simulator.step`); sizes are the model's typical size. Symbols the feed has not
    priced yet are left out.
    """
    models = (
        PriceModel.objects.select_related("instrument")
        .exclude(instrument__status=Instrument.Status.CLOSED)
        .exclude(last_price=None)
        .order_by("instrument__symbol")
    )
    snapshots = {}
    for model in models:
        last_price = model.last_price
        if last_price is None:  # pragma: no cover - the query leaves out models without one
            raise RuntimeError(f"the price model of {model.instrument.symbol} has no last price")
        tick = quantum(model.instrument.tick_size)
        price_ticks = to_ticks(last_price, tick)
        half_spread = max(1, round(price_ticks * model.spread_bps / 20000))
        size = model.typical_size.normalize()
        quote = Quote(
            symbol=model.instrument.symbol,
            bid=(tick * max(1, price_ticks - half_spread)).quantize(tick),
            ask=(tick * (price_ticks + half_spread)).quantize(tick),
            last=(tick * price_ticks).quantize(tick),
            bid_size=size,
            ask_size=size,
            open=(model.session_open or last_price).quantize(tick),
        )
        snapshots[quote.symbol] = SavedTicker(epoch_ms(model.updated_at), quote.as_data())
    return snapshots


@dataclass(frozen=True)
class BookSnapshot:
    """The matcher's committed book of one instrument: levels best first, each (price,
    remaining quantity); `seq` the number of the last delta the matcher published for the book
    (its `book` topic stream, 0 before the first), so a stream's updates continue from it;
    `updated_at` the book state's time (None before the matcher first touched the book)."""

    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    seq: int
    updated_at: datetime.datetime | None


# What rests in the matcher's book (`trading.matching.books.Book.rebuild`): open orders with a
# price, but not stop orders whose stop has not triggered yet (those wait outside the book).
RESTING = Q(status__in=[Order.Status.NEW, Order.Status.PARTIALLY_FILLED], price__isnull=False) & (
    Q(stop_price__isnull=True) | Q(triggered_at__isnull=False)
)


def _repeatable_read() -> transaction.Atomic:
    """A transaction whose reads share one snapshot (inside a caller's transaction: its own)."""
    outermost = not connection.in_atomic_block
    atomic = transaction.atomic()
    atomic.__enter__()
    if outermost:
        with connection.cursor() as cursor:
            cursor.execute(sql.REPEATABLE_READ)
    return atomic


def _stream_seq(topic: str, key: str) -> int:
    row = StreamSequence.objects.filter(topic=topic, key=key).values_list("seq", flat=True).first()
    return row or 0


def book_snapshot(instrument: Instrument, *, depth: int | None) -> BookSnapshot:
    """The top `depth` price levels per side (every level with None) of `instrument`'s book as
    the matcher last committed it, and the number of its last delta, read in one REPEATABLE
    READ transaction so they agree."""
    atomic = _repeatable_read()
    try:
        levels = (
            Order.objects.filter(RESTING, instrument=instrument)
            .values("price")
            .annotate(remaining=Sum(F("quantity") - F("filled_quantity")))
        )
        sides = {}
        for side, order in ((Order.Side.BUY, "-price"), (Order.Side.SELL, "price")):
            rows = levels.filter(side=side).order_by(order)
            if depth is not None:
                rows = rows[:depth]
            sides[side] = [(row["price"], row["remaining"]) for row in rows]
        seq = _stream_seq(kafka.BOOK, instrument.symbol)
        state = BookState.objects.filter(instrument=instrument).first()
    finally:
        atomic.__exit__(None, None, None)
    return BookSnapshot(
        bids=sides[Order.Side.BUY],
        asks=sides[Order.Side.SELL],
        seq=seq,
        updated_at=state.updated_at if state is not None else None,
    )


def recent_trades(instrument: Instrument, *, limit: int) -> list[Trade]:
    """The latest `limit` trades of `instrument`, newest first, with only their public fields
    loaded (seq, price, quantity, aggressor side, executed_at)."""
    return list(
        Trade.objects.filter(instrument=instrument)
        .order_by("-seq")
        .only("seq", "price", "quantity", "aggressor_side", "executed_at")[:limit]
    )


def trades_after(instrument: Instrument, *, after_seq: int, before_seq: int) -> list[Trade]:
    """The trades of `instrument` numbered between the two (exclusive), oldest first: what a
    stream missed between the last trade it saw and the one that just arrived."""
    return list(
        Trade.objects.filter(instrument=instrument, seq__gt=after_seq, seq__lt=before_seq)
        .order_by("seq")
        .only("seq", "price", "quantity", "aggressor_side", "executed_at")
    )


@dataclass(frozen=True)
class OrdersSnapshot:
    """An account's open orders and the number of the last event the matcher published for
    it (`account-events`), read in one snapshot so the events after it continue it."""

    orders: list[Order]
    seq: int


def open_orders_snapshot(account_id: int) -> OrdersSnapshot:
    atomic = _repeatable_read()
    try:
        orders = list(
            Order.objects.filter(account_id=account_id, status__in=Order.OPEN_STATUSES)
            .select_related("instrument")
            .order_by("pk")
        )
        seq = _stream_seq(kafka.ACCOUNT_EVENTS, str(account_id))
    finally:
        atomic.__exit__(None, None, None)
    return OrdersSnapshot(orders, seq)


def account_positions(account_ids: list[int]) -> dict[int, list[Position]]:
    """Each account's positions with their instruments, one query."""
    rows: dict[int, list[Position]] = {account_id: [] for account_id in account_ids}
    positions = (
        Position.objects.filter(account_id__in=account_ids)
        .select_related("instrument")
        .order_by("account_id", "instrument__symbol")
    )
    for position in positions:
        rows[position.account_id].append(position)
    return rows
