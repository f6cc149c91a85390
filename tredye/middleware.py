"""A lost or saturated database is answered 503 with Retry-After, never 500.

PostgreSQL restarting, a backend terminated under a request, or no pooled connection free
within DATABASE_POOL_TIMEOUT: the client is told to come back shortly, and one line is logged.
API clients (paths under `API_PATH_PREFIXES`, or a request that asks for JSON) get the error
shape of the JSON endpoints, `{"error": {"code": "database_unavailable", "detail": ...}}`;
pages get a small HTML page.

Database errors that are bugs (an integrity or programming error) stay 500s.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django import db
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse

from tredye.api import API_PATH_PREFIXES, error_response

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2
CODE = "database_unavailable"
DETAIL = "the database is unavailable; try again shortly"

# What a server restart, a terminated backend, a refused connection or an exhausted pool raises
# (as Django's wrappers of psycopg's errors, or psycopg's own outside Django's cursors; the
# pool's PoolTimeout and PoolClosed are psycopg.OperationalError).
UNAVAILABLE = (
    db.OperationalError,
    db.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title></head>
<body><h1>Temporarily unavailable</h1>
<p>Tredye cannot reach its database at the moment. Please try again in a few seconds.</p>
</body></html>
"""

_REMEMBERED = "_tredye_database_error"


def database_unavailable(error: BaseException | None) -> bool:
    """Whether `error` (or an error it was raised from) means the database is unreachable."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, UNAVAILABLE):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def wants_json(request: HttpRequest) -> bool:
    if request.path.startswith(API_PATH_PREFIXES):
        return True
    return "application/json" in request.headers.get("Accept", "") or (
        request.content_type == "application/json"
    )


def unavailable_response(request: HttpRequest, error: BaseException) -> HttpResponse:
    """The 503 for `request`, logged in one line."""
    logger.warning(
        "database unavailable: %s %s answered 503 (%s: %s)",
        request.method,
        request.path,
        type(error).__name__,
        str(error).strip().splitlines()[0] if str(error).strip() else "",
    )
    if wants_json(request):
        response: HttpResponse = error_response(CODE, DETAIL, 503)
    else:
        response = HttpResponse(HTML, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["Cache-Control"] = "no-store"
    # The line above is the log; not also a "Service Unavailable" (django.utils.log reads this
    # private flag, which django-stubs does not declare).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _remember(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """An exception outside the view (in another middleware) became a 500: keep what it was."""
    error = sys.exc_info()[1]
    if request is not None and database_unavailable(error):
        setattr(request, _REMEMBERED, error)


got_request_exception.connect(_remember, dispatch_uid="tredye.middleware.remember")


class DatabaseUnavailableMiddleware:
    """Turn the database being away into 503 + Retry-After (first in MIDDLEWARE).

    A view's exception is answered by `process_exception`. Another middleware's exception has
    already been turned into a 500 by Django when it reaches this one, the outermost; the
    `got_request_exception` receiver noted the error on the request, and that 500 is replaced.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self._replace_500(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._replace_500(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if database_unavailable(exception):
            return unavailable_response(request, exception)
        return None

    def _replace_500(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        error = getattr(request, _REMEMBERED, None)
        if error is not None and response.status_code == 500:
            return unavailable_response(request, error)
        return response
