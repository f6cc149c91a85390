"""The trader's JSON endpoints: place, cancel and list orders; list trades and positions.

Thin: parse the request, call one service or selector, shape the JSON. The API's shared rules
(error shape, body parsing, methods, login before CSRF) are in tredye/api.py. CSRF protection
stays on (send the csrftoken cookie as X-CSRFToken). Order entry (place, cancel, cancel-all) is
limited to ORDER_RATE_LIMIT_PER_S requests per account per second; past it, 429.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    JsonResponse,
)
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.exceptions import LedgerError
from accounts.models import Account
from accounts.selectors import account_for_user
from trading import selectors, services
from trading.exceptions import TradingError
from trading.messages import account_fill_message, order_message, position_message
from trading.models import DailyStatement
from trading.settlement import settlement_pending_list
from trading.statements import statement_csv, statement_get, statement_list, statement_pdf
from tredye import ratelimit
from tredye.api import (
    AuthenticatedHttpRequest,
    BadRequest,
    api_view,
    error_response,
    json_body,
)

REPLACE_FIELDS = {"quantity", "price"}
PLACE_FIELDS = {
    "symbol",
    "client_order_id",
    "side",
    "type",
    "quantity",
    "price",
    "stop_price",
    "time_in_force",
    "post_only",
}
ORDER_ID = re.compile(r"[0-9]{1,18}", re.ASCII)
PAGE_LIMIT = re.compile(r"[0-9]{1,4}", re.ASCII)
TRADES_PAGE_DEFAULT = 100
TRADES_PAGE_MAX = 500
# Signs the trades endpoint's cursor (with SECRET_KEY): a tampered one is refused, not read.
TRADES_CURSOR = signing.Signer(salt="trading.views.trades.cursor")


def trader_view(
    *methods: str, entry: bool = False
) -> Callable[[Callable[..., JsonResponse]], Callable[..., HttpResponse]]:
    """An endpoint of a logged-in user with a trading account (`api_view`'s checks first);
    service errors become 4xx. `entry`: an order-entry request, counted against the account's
    ORDER_RATE_LIMIT_PER_S."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., HttpResponse]:
        @api_view(methods)
        @wraps(view)
        def wrapped(request: AuthenticatedHttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            account = account_for_user(user=request.user)
            if account is None:
                return error_response("no_account", "you have no trading account", 403)
            limit = settings.ORDER_RATE_LIMIT_PER_S
            if (
                entry
                and request.method == "POST"
                and not ratelimit.per_second("orders", account.pk, limit)
            ):
                response = error_response(
                    "rate_limited",
                    f"more than {limit} order requests in a second; this one was not taken",
                    429,
                )
                response["Retry-After"] = "1"
                return response
            try:
                return view(request, account, *args, **kwargs)
            except TradingError as failure:
                return error_response(failure.code, failure.detail, failure.status)
            except LedgerError as failure:
                return error_response(failure.code, failure.detail, 400)

        return wrapped

    return decorate


@trader_view("GET", "POST", entry=True)
def orders(request: HttpRequest, account: Account) -> JsonResponse:
    if request.method == "GET":
        open_only = request.GET.get("open") in ("1", "true")
        rows = selectors.order_list(account=account, open_only=open_only)
        return JsonResponse({"orders": [order_message(order) for order in rows]})
    body = json_body(request)
    if (refused := _refused_fields(body, PLACE_FIELDS)) is not None:
        return refused
    # The service validates whatever the JSON holds, a missing field (None) too.
    order = services.order_place(
        account=account,
        symbol=body.get("symbol"),
        client_order_id=body.get("client_order_id"),
        side=body.get("side"),
        type=body.get("type", "limit"),
        quantity=body.get("quantity"),
        price=body.get("price"),
        stop_price=body.get("stop_price"),
        time_in_force=body.get("time_in_force", "gtc"),
        post_only=body.get("post_only", False),
    )
    return JsonResponse({"order": order_message(order)}, status=201)


def _refused_fields(body: dict, allowed: set[str]) -> JsonResponse | None:
    """The error for a field the endpoint does not take, or a number sent as a JSON number
    (money and sizes travel as decimal strings); None when the body's fields are acceptable."""
    unknown = set(body) - allowed
    if unknown:
        names = ", ".join(sorted(repr(name)[:40] for name in unknown)[:5])
        return error_response("unknown_field", f"unknown field(s): {names}")
    for name in ("quantity", "price", "stop_price"):
        if isinstance(body.get(name), float | int) and not isinstance(body.get(name), bool):
            return error_response(f"invalid_{name}", f'{name} must be a decimal string, e.g. "1.5"')
    return None


def _order_id(raw: str) -> int | None:
    """The order id in a URL (ASCII digits; '²'.isdigit() is true too), or None."""
    return int(raw) if ORDER_ID.fullmatch(raw) else None


@trader_view("POST", entry=True)
def order_cancel(request: HttpRequest, account: Account, order_id: str) -> JsonResponse:
    body = json_body(request)
    # An id that is not one (None) is refused by the service (unknown order).
    order = services.order_cancel(
        account=account,
        order_id=_order_id(order_id),
        quantity=body.get("quantity"),
    )
    return JsonResponse({"order": order_message(order)}, status=202)


@trader_view("POST", entry=True)
def order_replace(request: HttpRequest, account: Account, order_id: str) -> JsonResponse:
    """Amend a resting limit order: `{"quantity": total, "price": new limit}` (price optional).
    The matcher applies it in its place in the book's sequence (202, like a cancel)."""
    body = json_body(request)
    if (refused := _refused_fields(body, REPLACE_FIELDS)) is not None:
        return refused
    order = services.order_replace(
        account=account,
        order_id=_order_id(order_id) or 0,
        quantity=body.get("quantity"),
        price=body.get("price"),
    )
    return JsonResponse({"order": order_message(order)}, status=202)


@trader_view("POST", entry=True)
def cancel_all(request: HttpRequest, account: Account) -> JsonResponse:
    body = json_body(request)
    canceled = services.cancel_all(account=account, symbol=body.get("symbol"))
    return JsonResponse({"orders": [order_message(order) for order in canceled]}, status=202)


@trader_view("GET")
def order_detail(request: HttpRequest, account: Account, order_id: str) -> JsonResponse:
    order = selectors.order_get(account=account, order_id=_order_id(order_id) or 0)
    if order is None:
        return error_response("unknown_order", f"unknown order {order_id[:40]!r}", 404)
    return JsonResponse({"order": order_message(order)})


def _trades_page(request: HttpRequest) -> tuple[int, str | None, int | None]:
    """The trades endpoint's `limit`, `symbol` and cursor (the last trade id of the page
    before); raises BadRequest naming the bad one."""
    raw_limit = request.GET.get("limit", str(TRADES_PAGE_DEFAULT))
    if not PAGE_LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= TRADES_PAGE_MAX:
        raise BadRequest(
            "invalid_limit", f"limit must be a whole number from 1 to {TRADES_PAGE_MAX}"
        )
    symbol = request.GET.get("symbol")
    if symbol is not None and (not symbol or len(symbol) > 64 or "\x00" in symbol):
        raise BadRequest("unknown_instrument", f"unknown instrument {symbol[:40]!r}", 404)
    cursor = request.GET.get("cursor")
    before_id = None
    if cursor is not None:
        try:
            before_id = TRADES_CURSOR.unsign_object(cursor[:200])
        except (signing.BadSignature, ValueError):
            before_id = None
        if not isinstance(before_id, int) or isinstance(before_id, bool):
            raise BadRequest(
                "invalid_cursor", "cursor is not one this endpoint gave; start again without it"
            )
    return int(raw_limit), symbol, before_id


@trader_view("GET")
def trades(request: HttpRequest, account: Account) -> JsonResponse:
    """The account's fills, newest first, a page at a time: `limit` (default 100, at most
    500), `symbol`, and `cursor`, the `next_cursor` of the page before (null on the last
    page). The cursor is the last trade id of that page, signed so a client cannot forge
    one; new trades get higher ids, so the next page is the same whatever arrived meanwhile.
    (With several matchers owning partitions, a trade committed after a page passed its id
    lands behind the cursor: a client catching up reads from the top again.)"""
    limit, symbol, before_id = _trades_page(request)
    instrument = services.instrument_get(symbol) if symbol is not None else None
    rows = selectors.trade_list(
        account=account, instrument=instrument, before_id=before_id, limit=limit + 1
    )
    page = rows[:limit]
    more = len(rows) > limit
    return JsonResponse(
        {
            "trades": [account_fill_message(trade, account_id=account.pk) for trade in page],
            "next_cursor": TRADES_CURSOR.sign_object(page[-1].pk) if more else None,
        }
    )


@trader_view("GET")
def positions(request: HttpRequest, account: Account) -> JsonResponse:
    rows = selectors.position_list(account=account)
    return JsonResponse({"positions": [position_message(position) for position in rows]})


# --- settlement and daily statements (decision 0015): pages, not the JSON API ---------------

STATEMENTS_ON_BALANCES_PAGE = 10
STATEMENTS_PER_PAGE = 50


def balances_section(account: Account) -> tuple[str, dict[str, object]]:
    """The balances page's section of trading (registered in TradingConfig.ready): when the
    pending amounts settle, and the latest daily statements to download."""
    return (
        "trading/_balances_settlement.html",
        {
            "pending": settlement_pending_list(account_id=account.pk),
            "statements": list(statement_list(account_id=account.pk)[:STATEMENTS_ON_BALANCES_PAGE]),
        },
    )


@login_required
@require_http_methods(["GET"])
def statements(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The signed-in trader's daily statements, newest first, a page at a time."""
    account = account_for_user(user=request.user)
    rows = statement_list(account_id=account.pk) if account else DailyStatement.objects.none()
    page = Paginator(rows, STATEMENTS_PER_PAGE).get_page(request.GET.get("page", 1))
    return render(request, "trading/statements.html", {"account": account, "page": page})


@login_required
@require_http_methods(["GET"])
def statement_download(
    request: AuthenticatedHttpRequest, day: str, file_format: str
) -> HttpResponse:
    """One of the trader's own daily statements as CSV or PDF; any other is 404."""
    try:
        date = datetime.date.fromisoformat(day)
    except ValueError:
        return HttpResponseBadRequest(
            f"{day!r} is not a date: a statement is named by its trading day, YYYY-MM-DD.",
            content_type="text/plain; charset=utf-8",
        )
    account = account_for_user(user=request.user)
    statement = statement_get(account_id=account.pk, date=date) if account else None
    if statement is None:
        return HttpResponseNotFound(
            f"You have no statement for {date.isoformat()}: statements are stored after each "
            "trading day ends, for the days your account had a balance or activity.",
            content_type="text/plain; charset=utf-8",
        )
    filename = f"tredye-statement-{date.isoformat()}.{file_format}"
    if file_format == "csv":
        response = HttpResponse(
            statement_csv(statement.data), content_type="text/csv; charset=utf-8"
        )
    else:
        response = HttpResponse(statement_pdf(statement.data), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
