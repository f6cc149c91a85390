"""Admin: users and accounts (freeze, unfreeze, deposit, withdraw through the services, each
written to the audit log), balances, and the ledger read-only: no one, not even a superuser,
edits or deletes it here. The audit log (Django's admin log) is shown read-only too."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts import services
from accounts.exceptions import InvalidAmount, LedgerError
from accounts.models import Account, Asset, Balance, IdempotencyKey, JournalEntry, Posting


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    """A used asset's precision is shown, never edited: amounts were booked and rounded to it
    (`Asset.clean` and PostgreSQL refuse the change too; docs/decisions/0010)."""

    list_display = ["code", "name", "precision"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Asset | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.is_used():
            readonly.append("precision")
        return readonly


class ReadOnlyAdminMixin:
    """The ledger is append-only (the database refuses edits too): view, never change."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class BalanceInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Balance
    fields = readonly_fields = ("asset", "available", "held", "pending", "updated_at")
    extra = 0


class MovementForm(forms.Form):
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("code"))
    amount = forms.DecimalField(
        help_text="At most the asset's decimal places; nothing is rounded.",
    )
    reference = forms.CharField(max_length=128, help_text="Bank transfer id, ticket number…")
    memo = forms.CharField(max_length=255, required=False)
    # Made when the form is first shown, so submitting it twice applies the movement once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("asset") is not None and data.get("amount") is not None:
            try:
                data["amount"] = services.amount_validate(
                    amount=data["amount"], asset=data["asset"]
                )
            except InvalidAmount as error:
                self.add_error("amount", error.detail)
        return data


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "kind", "status", "status_reason", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["user__username", "user__email", "=id"]
    list_select_related = ["user"]
    fields = readonly_fields = (
        "kind",
        "user",
        "status",
        "status_reason",
        "status_changed_at",
        "created_at",
        "orders",
    )
    inlines = [BalanceInline]
    actions = ["freeze", "unfreeze", "deposit", "withdraw"]

    @admin.display(ordering="user__username")
    def owner(self, account: Account) -> str:
        return account.user.get_username() if account.user is not None else f"({account.kind})"

    @admin.display(description="orders")
    def orders(self, account: Account) -> SafeString | str:
        """Links to the account's orders and to cancelling them all: pages of the trading app,
        reached by URL name (accounts imports nothing of trading)."""
        try:
            listed = reverse("admin:trading_order_changelist")
            cancel_all = reverse("admin:trading_order_cancel_all", args=[account.pk])
        except NoReverseMatch:
            return "-"
        return format_html(
            '<a href="{}?q=account:{}">Its orders</a> · <a href="{}">Cancel all open orders…</a>',
            listed,
            account.pk,
            cancel_all,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # opened at sign-up (or with the user), never by hand

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # an account with a ledger history is kept forever

    @admin.action(description="Freeze selected accounts", permissions=["change"])
    def freeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, services.account_freeze, "frozen")

    @admin.action(description="Unfreeze selected accounts", permissions=["change"])
    def unfreeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, services.account_unfreeze, "unfrozen")

    def _set_status(self, request, queryset, service, done: str) -> None:
        for account in queryset:
            try:
                service(account=account, reason=f"{done} in admin by {request.user}")
            except LedgerError as error:
                self.message_user(request, f"#{account.pk}: {error.detail}", messages.ERROR)
            else:
                self.log_change(request, account, f"Account {done} through {service.__name__}.")
                self.message_user(request, f"Account #{account.pk} {done}.", messages.SUCCESS)

    @admin.action(description="Deposit into selected accounts…", permissions=["change"])
    def deposit(self, request: HttpRequest, queryset: QuerySet[Account]) -> HttpResponse | None:
        return self._movement(request, queryset, services.deposit, "Deposit")

    @admin.action(description="Withdraw from selected accounts…", permissions=["change"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Account]) -> HttpResponse | None:
        return self._movement(request, queryset, services.withdraw, "Withdraw")

    def _movement(self, request, queryset, service, title: str) -> HttpResponse | None:
        accounts = list(queryset.filter(kind=Account.Kind.CUSTOMER).select_related("user"))
        if "apply" in request.POST:
            form = MovementForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                for account in accounts:
                    try:
                        entry = service(
                            account=account,
                            asset=data["asset"],
                            amount=data["amount"],
                            reference=data["reference"],
                            memo=data["memo"] or f"{title.lower()} in admin by {request.user}",
                            idempotency_key=f"{data['idempotency_key']}:{account.pk}",
                        )
                    except LedgerError as error:
                        self.message_user(request, f"#{account.pk}: {error.detail}", messages.ERROR)
                    else:
                        done = (
                            f"{title} of {services.amount_format(data['amount'], data['asset'])} "
                            f"for account #{account.pk}: journal entry #{entry.pk}."
                        )
                        self.log_change(request, account, f"{done} Reference {data['reference']}.")
                        self.message_user(request, done, messages.SUCCESS)
                return None
        else:
            form = MovementForm(initial={"idempotency_key": f"admin-{uuid.uuid4()}"})
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title} — {len(accounts)} account{'s' if len(accounts) != 1 else ''}",
            "opts": self.model._meta,
            "form": form,
            "accounts": accounts,
            "action": request.POST.get("action"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "submit_label": title,
        }
        return TemplateResponse(request, "admin/accounts/account/movement.html", context)


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "asset", "available", "held", "pending", "updated_at"]
    list_filter = ["asset", "account_kind"]
    search_fields = ["account__user__username", "=account__id"]
    list_select_related = ["account__user", "asset"]


class PostingInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Posting
    fields = readonly_fields = ("account", "asset", "bucket", "amount")
    extra = 0


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "reference", "memo", "created_at"]
    list_filter = ["kind"]
    search_fields = ["reference", "memo", "=id", "postings__account__user__username"]
    date_hierarchy = "created_at"
    fields = readonly_fields = ("kind", "reference", "memo", "created_at")
    inlines = [PostingInline]


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "entry", "account", "asset", "bucket", "amount"]
    list_filter = ["bucket", "asset"]
    search_fields = ["=entry__id", "account__user__username", "entry__reference"]
    list_select_related = ["entry", "account__user", "asset"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["key", "entry", "created_at"]
    search_fields = ["key"]


class AccountInline(ReadOnlyAdminMixin, admin.StackedInline):
    model = Account
    fields = readonly_fields = ("id", "kind", "status", "status_reason")
    extra = 0


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class TraderUserAdmin(UserAdmin):
    """Django's user admin, showing the trading account and opening one with each new user."""

    inlines = [AccountInline]

    def get_inlines(self, request: HttpRequest, obj: object = None) -> list:
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            services.account_open(user=obj)


@admin.register(LogEntry)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit log: every operator action (who, when, on what, what was done), as the admin
    and the back office's actions write it. Nobody edits or deletes it here."""

    list_display = ["action_time", "user", "content_type", "object_link", "action", "message"]
    # Only the users and kinds of object the log names (not every trader of the venue).
    list_filter = [
        ("action_time", admin.DateFieldListFilter),
        ("user", admin.RelatedOnlyFieldListFilter),
        ("content_type", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["user", "content_type"]
    search_fields = ["=object_id", "object_repr", "change_message"]

    @admin.display(description="object")
    def object_link(self, entry: LogEntry) -> SafeString | str:
        url = entry.get_admin_url() if not entry.is_deletion() else ""
        if not url:
            return entry.object_repr
        return format_html('<a href="{}">{}</a>', url, entry.object_repr)

    @admin.display(description="action")
    def action(self, entry: LogEntry) -> str:
        if entry.is_addition():
            return "added"
        return "deleted" if entry.is_deletion() else "changed"

    @admin.display(description="what was done")
    def message(self, entry: LogEntry) -> str:
        return entry.get_change_message()
