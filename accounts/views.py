from __future__ import annotations

import math
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from accounts import selectors, services
from accounts.forms import SignupForm
from accounts.models import Account
from tredye.api import AuthenticatedHttpRequest


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return settings.LOGIN_REDIRECT_URL


def login_locked_out(
    request: HttpRequest,
    original_response: HttpResponse | dict | None = None,
    credentials: dict | None = None,
) -> HttpResponse:
    """The 429 page for a sign-in refused by login throttling (AXES_LOCKOUT_CALLABLE).

    django-axes calls it with (request, response, credentials) from a sync middleware chain
    and with (request, credentials) from an async one; both come here.
    """
    if isinstance(original_response, dict):
        credentials = original_response
    cooloff = settings.AXES_COOLOFF_TIME
    cooloff_s = math.ceil(cooloff.total_seconds()) if cooloff else None
    response = render(
        request,
        "registration/locked_out.html",
        {
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "cooloff_minutes": math.ceil(cooloff_s / 60) if cooloff_s else None,
            "username": (credentials or {}).get("username") or "",
            "login_url": settings.LOGIN_URL,
        },
        status=429,
    )
    if cooloff_s:
        response["Retry-After"] = str(cooloff_s)
    return response


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create a user and their trading account, then sign them in."""
    if not settings.ACCOUNTS_SIGNUP_OPEN:
        raise Http404("Sign-up is closed")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.user_signup(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to Tredye, {user.get_username()}.")
        return redirect(_next_url(request))
    return render(request, "accounts/signup.html", {"form": form, "next": _next_url(request)})


# Sections other apps add to the balances page (trading: when pending amounts settle, and the
# daily statements to download), each a function of the account returning a template and its
# context. Apps register them when they are ready, so accounts imports none of them.
BalancesSection = Callable[[Account], tuple[str, dict[str, object]]]
_BALANCES_SECTIONS: list[BalancesSection] = []


def balances_section_register(section: BalancesSection) -> None:
    """Show `section` on the balances page, under the balances (once, however often called)."""
    if section not in _BALANCES_SECTIONS:
        _BALANCES_SECTIONS.append(section)


@login_required
@require_http_methods(["GET"])
def balances(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's balances per asset (settled apart from pending settlement), the sections
    other apps register, and their ledger history, a page at a time."""
    account = services.account_open(user=request.user)
    sections = []
    for section in _BALANCES_SECTIONS:
        template, context = section(account)
        sections.append({"template": template, "context": context})
    return render(
        request,
        "accounts/balances.html",
        {
            "account": account,
            "balances": selectors.balance_list(account=account, include_every_asset=True),
            "sections": sections,
            "history": selectors.ledger_history(account=account, page=request.GET.get("page", 1)),
        },
    )
