"""The trader's JSON endpoints: place, cancel and list orders; list trades and positions.

Thin: parse the request, call one service or selector, shape the JSON. Errors carry a
machine-readable code. CSRF protection stays on (send the csrftoken cookie as X-CSRFToken).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.exceptions import LedgerError
from accounts.selectors import account_for_user
from trading import selectors, services
from trading.exceptions import TradingError
from trading.matcher import order_message
from trading.units import plain

MAX_BODY_BYTES = 8192
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


def error(code: str, detail: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "detail": detail}}, status=status)


def trader_view(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Require a logged-in user with a trading account; map service errors to 4xx."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return error("not_authenticated", "log in first", 401)
        account = account_for_user(user=request.user)
        if account is None:
            return error("no_account", "you have no trading account", 403)
        try:
            return view(request, account, *args, **kwargs)
        except TradingError as failure:
            return error(failure.code, failure.detail, failure.status)
        except LedgerError as failure:
            return error(failure.code, failure.detail, 400)

    return wrapped


def _body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    if len(request.body) > MAX_BODY_BYTES:
        return error("body_too_large", f"the body is over {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return error("invalid_json", "the body is not JSON")
    if not isinstance(body, dict):
        return error("invalid_json", "the body must be a JSON object")
    return body


@require_http_methods(["GET", "POST"])
@trader_view
def orders(request: HttpRequest, account: Any) -> JsonResponse:
    if request.method == "GET":
        open_only = request.GET.get("open") in ("1", "true")
        rows = selectors.order_list(account=account, open_only=open_only)
        return JsonResponse({"orders": [order_message(order) for order in rows]})
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    unknown = set(body) - PLACE_FIELDS
    if unknown:
        return error("unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("quantity", "price", "stop_price"):
        if isinstance(body.get(name), float | int) and not isinstance(body.get(name), bool):
            return error(f"invalid_{name}", f'{name} must be a decimal string, e.g. "1.5"')
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


def _order_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


@require_POST
@trader_view
def order_cancel(request: HttpRequest, account: Any, order_id: str) -> JsonResponse:
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    order = services.order_cancel(
        account=account, order_id=_order_id(order_id), quantity=body.get("quantity")
    )
    return JsonResponse({"order": order_message(order)}, status=202)


@require_POST
@trader_view
def cancel_all(request: HttpRequest, account: Any) -> JsonResponse:
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    canceled = services.cancel_all(account=account, symbol=body.get("symbol"))
    return JsonResponse({"orders": [order_message(order) for order in canceled]}, status=202)


@require_GET
@trader_view
def order_detail(request: HttpRequest, account: Any, order_id: str) -> JsonResponse:
    order = selectors.order_get(account=account, order_id=_order_id(order_id) or 0)
    if order is None:
        return error("unknown_order", f"unknown order {order_id}", 404)
    return JsonResponse({"order": order_message(order)})


@require_GET
@trader_view
def trades(request: HttpRequest, account: Any) -> JsonResponse:
    rows = selectors.trade_list(account=account)
    return JsonResponse(
        {
            "trades": [
                {
                    "symbol": trade.instrument.symbol,
                    "seq": trade.seq,
                    "side": "buy" if trade.buyer_id == account.pk else "sell",
                    "price": plain(trade.price),
                    "quantity": plain(trade.quantity),
                    "fee": plain(
                        trade.buyer_fee if trade.buyer_id == account.pk else trade.seller_fee
                    ),
                    "executed_at": trade.executed_at.isoformat(),
                }
                for trade in rows
            ]
        }
    )


@require_GET
@trader_view
def positions(request: HttpRequest, account: Any) -> JsonResponse:
    rows = selectors.position_list(account=account)
    return JsonResponse(
        {
            "positions": [
                {
                    "symbol": position.instrument.symbol,
                    "quantity": plain(position.quantity),
                    "average_cost": plain(position.average_cost),
                    "realized_pnl": plain(position.realized_pnl),
                }
                for position in rows
            ]
        }
    )
