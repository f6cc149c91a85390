import logging
import time

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from marketdata import selectors
from tredye.api import api_view, error_response

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
        snapshots = selectors.ticker_snapshots_saved()
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


@api_view(["GET"], login=False)
@never_cache
def tickers(request: HttpRequest) -> JsonResponse:
    """Every active instrument's latest prices from PostgreSQL, without Redis.

    What the page polls while the live stream is unavailable. Items have the shape of the
    stream's batch items: `{"ch": "ticker.AAPL", "ts": ..., "data": {...}}`.
    """
    try:
        snapshots = selectors.ticker_snapshots_saved()
    except DatabaseError:
        logger.warning("tickers: database unavailable", exc_info=True)
        return error_response("unavailable", "prices are unavailable", 503)
    now_ms = time.time_ns() // 1_000_000
    messages = [
        {"ch": f"ticker.{symbol}", "ts": now_ms, "data": data} for symbol, data in snapshots.items()
    ]
    return JsonResponse({"messages": messages, "source": "database"})
