import datetime
import logging
import re

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from marketdata import candle_store, selectors
from marketdata.candles import INTERVALS, bar_message, bucket_start
from trading.messages import book_snapshot_message, epoch_ms, public_trade_message
from trading.models import Instrument
from trading.units import plain
from tredye.api import BadRequest, api_view, error_response

logger = logging.getLogger(__name__)


def watchlist(request: HttpRequest) -> HttpResponse:
    """The watchlist: every active instrument, filled from the last known ticks."""
    instruments = selectors.active_instruments()
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        snapshots = selectors.ticker_snapshots(client)
        client.close()
    except (redis.RedisError, OSError):
        logger.warning("watchlist: no snapshot cache; rendering the prices saved in PostgreSQL")
        snapshots = {s: t.data for s, t in selectors.ticker_snapshots_saved().items()}
    rows = [{"instrument": i, "tick": snapshots.get(i.symbol, {})} for i in instruments]
    return render(
        request,
        "marketdata/watchlist.html",
        {
            "rows": rows,
            "snapshot_url": reverse("marketdata:tickers"),
            "poll_ms": round(settings.STREAM_FALLBACK_POLL_S * 1000),
        },
    )


def trade(request: HttpRequest, symbol: str) -> HttpResponse:
    """The trading screen of one instrument: the book, the tape, the order ticket and (signed
    in) the trader's open orders, balances and positions, all live from the stream."""
    instruments = selectors.active_instruments()
    current = next((i for i in instruments if i.symbol == symbol), None)
    if current is None:
        raise Http404(f"no listed instrument {symbol[:32]!r}")
    markets = [
        {
            "symbol": i.symbol,
            "name": i.name,
            "status": i.status,
            "base": i.base.code,
            "quote": i.quote.code,
            "tick_size": plain(i.tick_size),
            "lot_size": plain(i.lot_size),
            "min_quantity": plain(i.min_quantity),
            "max_quantity": plain(i.max_quantity),
            "maker_fee_rate": plain(i.maker_fee_rate),
            "taker_fee_rate": plain(i.taker_fee_rate),
        }
        for i in instruments
    ]
    return render(
        request,
        "marketdata/trade.html",
        {
            "instrument": current,
            "instruments": instruments,
            "markets": markets,
            "intervals": list(INTERVALS),
        },
    )


@api_view(["GET"], login=False)
@never_cache
def tickers(request: HttpRequest) -> JsonResponse:
    """Every active instrument's latest prices from PostgreSQL, without Redis.

    What the page polls while the live stream is unavailable. Items have the shape of the
    stream's batch items: `{"ch": "ticker.AAPL", "ts": ..., "data": {...}}`, `ts` the time the
    feed saved that price (so a client shows its true age, not the time of the request).
    """
    try:
        snapshots = selectors.ticker_snapshots_saved()
    except DatabaseError:
        logger.warning("tickers: database unavailable", exc_info=True)
        return error_response("unavailable", "prices are unavailable", 503)
    messages = [
        {"ch": f"ticker.{symbol}", "ts": saved.ts, "data": saved.data}
        for symbol, saved in snapshots.items()
    ]
    return JsonResponse({"messages": messages, "source": "database"})


CANDLE_PARAMETERS = {"symbol", "interval", "from", "to"}
CANDLES_DEFAULT = 500
CANDLES_MAX = 1000
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
EPOCH_MS = re.compile(r"-?[0-9]{1,15}", re.ASCII)


@api_view(["GET"], login=False)
@never_cache
def candles(request: HttpRequest) -> JsonResponse:
    """A symbol's candle history for the chart: `?symbol=&interval=&from=&to=`.

    `interval` is one of 1s, 1m, 5m, 1h; `from` and `to` are ISO 8601 (UTC when no offset is
    given) or epoch milliseconds. The bars returned start in [from, to), `from` taken down to
    the start of its bar so the bar holding it is included, oldest first. Without a range, the
    latest 500 bars; with only `from`, the first 500 from there; with only `to`, the latest 500
    before it. A range may span at most 1,000 bars. Times are epoch ms, numbers strings (never
    floats); only bars with trades exist, so a quiet stretch has none.
    """
    _parameters_check(request, CANDLE_PARAMETERS)
    symbol = request.GET.get("symbol", "")
    if not symbol:
        raise BadRequest("invalid_symbol", "symbol is required, e.g. ?symbol=AAPL&interval=1m")
    interval = request.GET.get("interval", "")
    if interval not in INTERVALS:
        raise BadRequest(
            "invalid_interval",
            f"interval must be one of {', '.join(INTERVALS)}, not {interval[:20]!r}",
        )
    start = _time_parameter(request, "from")
    end = _time_parameter(request, "to")
    if start is not None:
        start = bucket_start(start, interval)
    if start is not None and end is not None:
        if end <= start:
            raise BadRequest("invalid_range", "to must be later than from")
        span = -((start - end) // datetime.timedelta(seconds=INTERVALS[interval]))  # ceiling
        if span > CANDLES_MAX:
            raise BadRequest(
                "range_too_large",
                f"at most {CANDLES_MAX} bars per call; from..to spans {span} {interval} bars,"
                " ask for a shorter range",
            )
    try:
        bars = candle_store.candles_read(
            symbol=symbol,
            interval=interval,
            start=start,
            end=end,
            limit=CANDLES_MAX if start is not None and end is not None else CANDLES_DEFAULT,
        )
    except candle_store.UnknownSymbol as unknown_symbol:
        raise BadRequest("invalid_symbol", str(unknown_symbol)) from None
    return JsonResponse(
        {"symbol": symbol, "interval": interval, "candles": [bar_message(bar) for bar in bars]}
    )


def _time_parameter(request: HttpRequest, name: str) -> datetime.datetime | None:
    raw = request.GET.get(name)
    if raw is None:
        return None
    try:
        if EPOCH_MS.fullmatch(raw):
            return EPOCH + datetime.timedelta(milliseconds=int(raw))
        value = datetime.datetime.fromisoformat(raw)
    except (ValueError, OverflowError, OSError):
        value = None
    if value is None:
        raise BadRequest(
            "invalid_time",
            f"{name} must be ISO 8601 (e.g. 2026-11-27T10:00:00Z) or epoch milliseconds,"
            f" not {raw[:40]!r}",
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)


BOOK_PARAMETERS = {"symbol", "depth"}
BOOK_DEPTH_DEFAULT = 20
BOOK_DEPTH_MAX = 200
TAPE_PARAMETERS = {"symbol", "limit"}
TAPE_LIMIT_DEFAULT = 50
TAPE_LIMIT_MAX = 500
WHOLE_NUMBER = re.compile(r"[0-9]{1,4}", re.ASCII)


@api_view(["GET"], login=False)
@never_cache
def book(request: HttpRequest) -> JsonResponse:
    """A symbol's book as the matcher last committed it: `?symbol=&depth=`.

    The price levels of the orders resting in the book (open, with a price, not a stop waiting
    for its trigger), the remaining quantities summed per side and price, bids best (highest)
    first, asks best (lowest) first, `depth` levels a side (20 by default, at most 200), as
    [price, quantity] strings. `seq` is the number of the book's last delta (its `book`
    topic stream) read in the same database snapshot as the levels, `ts` the book state's last
    update (epoch ms; null before the matcher first touched the book). A client resyncs the
    `book.SYMBOL` channel from it: the channel's updates name their `prev_seq` in the same
    numbers.
    """
    instrument = _snapshot_instrument(request, BOOK_PARAMETERS)
    depth = _count_parameter(request, "depth", BOOK_DEPTH_DEFAULT, BOOK_DEPTH_MAX)
    snapshot = selectors.book_snapshot(instrument, depth=depth)
    updated = snapshot.updated_at
    return JsonResponse(
        book_snapshot_message(
            symbol=instrument.symbol,
            seq=snapshot.seq,
            ts=epoch_ms(updated) if updated is not None else None,
            bids=snapshot.bids,
            asks=snapshot.asks,
        )
    )


@api_view(["GET"], login=False)
@never_cache
def trades(request: HttpRequest) -> JsonResponse:
    """A symbol's public tape: `?symbol=&limit=`, the latest trades newest first (50 by
    default, at most 500), each with its trade seq, price, quantity, aggressor side and `ts`
    (when it executed, epoch ms); never an account or an order."""
    instrument = _snapshot_instrument(request, TAPE_PARAMETERS)
    limit = _count_parameter(request, "limit", TAPE_LIMIT_DEFAULT, TAPE_LIMIT_MAX)
    tape = [
        public_trade_message(trade) for trade in selectors.recent_trades(instrument, limit=limit)
    ]
    return JsonResponse({"symbol": instrument.symbol, "trades": tape})


def _snapshot_instrument(request: HttpRequest, allowed: set[str]) -> Instrument:
    """The instrument `?symbol=` names; raises BadRequest (the candles endpoint's codes) for an
    unknown parameter, a missing or an unknown symbol."""
    _parameters_check(request, allowed)
    symbol = request.GET.get("symbol", "")
    if not symbol:
        raise BadRequest("invalid_symbol", "symbol is required, e.g. ?symbol=AAPL")
    try:
        return candle_store.instrument_of(symbol)
    except candle_store.UnknownSymbol as unknown_symbol:
        raise BadRequest("invalid_symbol", str(unknown_symbol)) from None


def _count_parameter(request: HttpRequest, name: str, default: int, most: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= most:
        raise BadRequest(f"invalid_{name}", f"{name} must be a whole number from 1 to {most}")
    return int(raw)


def _parameters_check(request: HttpRequest, allowed: set[str]) -> None:
    """Refuse a query parameter the endpoint does not take (400 `unknown_parameter`)."""
    unknown = sorted(set(request.GET) - allowed)
    if unknown:
        raise BadRequest(
            "unknown_parameter",
            f"unknown parameter {unknown[0][:30]!r}; use {', '.join(sorted(allowed))}",
        )
