"""The JSON API's shared rules: one error shape, the JSON body, methods, login and CSRF.

Every error of an API endpoint (paths under `API_PATH_PREFIXES`) is JSON with a
machine-readable code, the same shape everywhere:

    {"error": {"code": "insufficient_funds", "detail": "account #3 has 1.00 USD available, ..."}}

That covers the errors Django would answer in HTML or with an empty body: a CSRF failure
(403 `csrf_failed`, `csrf_failure` is CSRF_FAILURE_VIEW), a wrong method (405
`method_not_allowed` with Allow), an unknown path (404 `not_found`) and a server error (500
`server_error`, `handler500`). An endpoint that needs a logged-in user says so with 401
`not_authenticated` before it looks at the CSRF token (as Django REST framework does), so a
client that lost its session is told that, not that its token is wrong.

A JSON body (`json_body`) is refused with 400 and a code when it is not a JSON object, nests
deeper than `MAX_DEPTH`, or holds a NUL character (PostgreSQL text cannot), and with 413 when
it is larger than `MAX_BODY_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views import csrf as django_csrf
from django.views import defaults as django_defaults
from django.views.decorators.csrf import csrf_exempt

if TYPE_CHECKING:
    from django.contrib.auth.models import User

API_PATH_PREFIXES = ("/trading/api/", "/marketdata/api/")
MAX_BODY_BYTES = 8192
MAX_DEPTH = 16


class BadRequest(Exception):
    """A request the API refuses: turned into `error_response` by `api_view`."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def error_response(code: str, detail: str, status: int = 400) -> JsonResponse:
    """The API's one error shape."""
    return JsonResponse({"error": {"code": code, "detail": detail}}, status=status)


class AuthenticatedHttpRequest(HttpRequest):
    """For type checking only: the request of a view that only a signed-in user reaches
    (`login_required`, `api_view` with `login`), whose `user` is never AnonymousUser."""

    user: User


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIXES)


# --- the body --------------------------------------------------------------------------------


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object (an empty body is `{}`); raises BadRequest otherwise."""
    raw = request.body
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body_too_large", f"the body is over {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise BadRequest("invalid_json", f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("invalid_json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object")
    _check_values(body)
    return body


def _check_values(body: object) -> None:
    """Refuse nesting deeper than MAX_DEPTH and NUL characters in any key or string."""
    level: list[object] = [body]
    for depth in range(MAX_DEPTH + 1):
        below: list[object] = []
        for value in level:
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                below.extend(value.values())
            elif isinstance(value, list):
                below.extend(value)
            elif isinstance(value, str):
                _check_text(value)
        if not below:
            return
        if depth == MAX_DEPTH:
            raise BadRequest("invalid_json", f"the body nests deeper than {MAX_DEPTH} levels")
        level = below


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise BadRequest("invalid_character", "the body holds a NUL character")


# --- views ---------------------------------------------------------------------------------


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, run inside a view; returns the reason it refuses, or None."""

    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _no_response(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    raise AssertionError


def csrf_refusal(request: HttpRequest) -> str | None:
    """Why Django's CSRF protection refuses `request` (None: it passes, or is a safe method)."""
    check = _CsrfCheck(_no_response)
    check.process_request(request)
    # (process_view returns what _reject returns: here the reason, not a response.)
    return check.process_view(request, _no_response, (), {})  # type: ignore[return-value]


def api_view(
    methods: Iterable[str], *, login: bool = True
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """An API endpoint: methods checked (405 in JSON), then login (401), then CSRF (403);
    BadRequest raised inside becomes its error response."""
    allowed = [method.upper() for method in methods]
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.append("HEAD")  # a GET endpoint answers HEAD (the body is dropped)

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt  # checked below, after the login, in the API's own error shape
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                response = error_response(
                    "method_not_allowed",
                    f"{request.method} is not allowed here; use {', '.join(allowed)}",
                    405,
                )
                response["Allow"] = ", ".join(allowed)
                return response
            if login and not request.user.is_authenticated:
                return error_response("not_authenticated", "log in first", 401)
            reason = csrf_refusal(request)
            if reason is not None:
                return csrf_error(reason)
            try:
                return view(request, *args, **kwargs)
            except BadRequest as refusal:
                return error_response(refusal.code, refusal.detail, refusal.status)

        return wrapped

    return decorate


def csrf_error(reason: str) -> JsonResponse:
    return error_response(
        "csrf_failed",
        f"CSRF check failed ({reason}); send the csrftoken cookie's value as X-CSRFToken",
        403,
    )


# --- Django's error views, in JSON for the API --------------------------------------------


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON on the API, Django's page elsewhere."""
    if is_api_request(request):
        return csrf_error(reason)
    return django_csrf.csrf_failure(request, reason=reason)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """The last URL pattern under each API prefix: an unknown path is a JSON 404 also with
    DEBUG on (Django's debug 404 page skips handler404), and a path without its trailing slash
    is named, not redirected (a redirect turns a POST into a GET)."""
    path = request.path
    hint = f"; did you mean {path}/?" if not path.endswith("/") else ""
    return error_response("not_found", f"no endpoint at {path[:100]}{hint[:110]}", 404)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return api_not_found(request)
    return django_defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return error_response("server_error", "the server failed; the error is logged", 500)
    return django_defaults.server_error(request)
