import logging

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from marketdata import selectors

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
        logger.warning("watchlist: no snapshot cache; rendering empty rows")
        snapshots = {}
    rows = [{"instrument": i, "tick": snapshots.get(i.symbol, {})} for i in instruments]
    return render(request, "marketdata/watchlist.html", {"rows": rows})
