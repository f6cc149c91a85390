"""Admin: settlements (with the trades each covers), daily statements, the holiday list that
the business calendar reads, reconciliation runs and their breaks (an open break is resolved
with a note through `trading.reconcile.break_resolve`, and written to the audit log)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin import ReadOnlyAdminMixin
from trading.admin.display import account_link, admin_link, search_link, table
from trading.admin.lists import BigTableAdmin, SearchTerm
from trading.admin.orders import TRADES_SHOWN
from trading.exceptions import BreakNotResolvable
from trading.models import (
    DailyStatement,
    Holiday,
    ReconciliationBreak,
    ReconciliationRun,
    Settlement,
    Trade,
)
from trading.reconcile import break_resolve


def _account_lookups(term: SearchTerm) -> Q | None:
    """An account's rows (settlements and statements lead their indexes with the account)."""
    if term.kind not in (None, "account", "user"):
        return None
    if term.kind is None and term.number is not None:
        return Q(account_id=term.number)
    ids = term.account_ids()
    return Q(account_id__in=ids) if ids else None


@admin.register(Settlement)
class SettlementAdmin(BigTableAdmin):
    list_display = ["id", "date", "account_link", "asset", "amount", "trade_count", "entry_link"]
    list_display_links = ["id"]
    list_select_related = ["account__user", "asset"]
    list_filter = ["date", "asset"]
    readonly_fields = ["trades"]
    search_help_text = "An account id or a username; or say which with account:, user:."

    def search_lookups(self, term: SearchTerm) -> Q | None:
        return _account_lookups(term)

    @admin.display(description="account", ordering="account_id")
    def account_link(self, settlement: Settlement) -> SafeString:
        return account_link(settlement.account)

    @admin.display(description="journal entry")
    def entry_link(self, settlement: Settlement) -> SafeString:
        return admin_link("accounts_journalentry", settlement.entry_id, f"#{settlement.entry_id}")

    @admin.display(description="trades settled")
    def trades(self, settlement: Settlement) -> SafeString:
        # Each side by its own index (trade_buyer_settlement, trade_seller_settlement).
        trades = list(
            Trade.objects.filter(
                Q(buyer_settlement_id=settlement.pk) | Q(seller_settlement_id=settlement.pk)
            )
            .select_related("instrument")
            .order_by("pk")[:TRADES_SHOWN]
        )
        rows = [
            (
                admin_link("trading_trade", t.pk, f"{t.instrument.symbol} #{t.seq}"),
                "bought" if t.buyer_settlement_id == settlement.pk else "sold",
                t.quantity,
                t.price,
                t.quote_amount,
                t.executed_at,
            )
            for t in trades
        ]
        if not rows:
            return SafeString("none")
        shown = table(["trade", "side", "quantity", "price", "quote amount", "executed"], rows)
        if len(rows) < TRADES_SHOWN:
            return shown
        return format_html(
            "{}<p>The first {}; {}.</p>",
            shown,
            TRADES_SHOWN,
            search_link(
                "trading_trade", f"account:{settlement.account_id}", "the account's trades"
            ),
        )


@admin.register(DailyStatement)
class DailyStatementAdmin(BigTableAdmin):
    list_display = ["id", "date", "account_link", "created_at"]
    list_display_links = ["id"]
    list_select_related = ["account__user"]
    list_filter = ["date"]
    exclude = ["data"]
    readonly_fields = ["figures"]
    search_help_text = "An account id or a username; or say which with account:, user:."

    def search_lookups(self, term: SearchTerm) -> Q | None:
        return _account_lookups(term)

    @admin.display(description="account", ordering="account_id")
    def account_link(self, statement: DailyStatement) -> SafeString:
        return account_link(statement.account)

    @admin.display(description="figures")
    def figures(self, statement: DailyStatement) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(statement.data, indent=2, sort_keys=True))


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    """The weekdays on which nothing settles: the business calendar reads this list."""

    list_display = ["date", "name"]
    ordering = ["date"]
    date_hierarchy = "date"
    search_fields = ["name"]


class BreakInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ReconciliationBreak
    fields = readonly_fields = ("kind", "subject", "found_at", "resolved_at")
    show_change_link = True
    extra = 0


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "started_at", "finished_at", "status", "trigger"]
    list_filter = ["status", "trigger"]
    readonly_fields = ["checked_shown"]
    exclude = ["checked"]
    inlines = [BreakInline]

    @admin.display(description="checked")
    def checked_shown(self, run: ReconciliationRun) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(run.checked, indent=2, sort_keys=True))


class BreakStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)  # the break_open index
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class ResolveForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        max_length=2000,
        help_text="What was found and what was done about it: kept with the break.",
        error_messages={"required": "A break is resolved with a note."},
    )

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError("A break is resolved with a note.")
        return note


@admin.register(ReconciliationBreak)
class ReconciliationBreakAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "subject", "found_at", "last_seen_at", "resolved_at"]
    list_filter = [BreakStateFilter, "kind"]
    search_fields = ["subject"]
    list_select_related = ["resolved_by"]
    readonly_fields = ["involved_shown"]
    exclude = ["involved"]
    actions = ["resolve"]

    @admin.display(description="involved")
    def involved_shown(self, found: ReconciliationBreak) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(found.involved, indent=2, sort_keys=True))

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("trading.change_reconciliationbreak")

    @admin.action(description="Resolve the selected breaks with a note…", permissions=["resolve"])
    def resolve(
        self, request: HttpRequest, queryset: QuerySet[ReconciliationBreak]
    ) -> HttpResponse | None:
        breaks = list(queryset.filter(resolved_at__isnull=True).order_by("pk"))
        if not breaks:
            self.message_user(request, "None of the selected breaks is open.", messages.WARNING)
            return None
        operator = request.user
        if isinstance(operator, AnonymousUser):  # admin pages are for signed-in staff only
            raise PermissionDenied
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            note = form.cleaned_data["note"]
            for found in breaks:
                try:
                    # The resolution and its line in the audit log commit together.
                    with transaction.atomic():
                        break_resolve(break_id=found.pk, user=operator, note=note)
                        self.log_change(request, found, f"Resolved with the note: {note}")
                except BreakNotResolvable as error:
                    self.message_user(request, f"Break #{found.pk}: {error.detail}", messages.ERROR)
                    continue
                self.message_user(request, f"Break #{found.pk} resolved.", messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Resolve {len(breaks)} break{'s' if len(breaks) != 1 else ''}",
            "opts": self.opts,
            "form": form,
            "breaks": breaks,
            "action": request.POST.get("action"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/trading/reconciliationbreak/resolve.html", context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra = {"can_resolve": self.has_resolve_permission(request)}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})
