"""Admin: orders, trades and positions, read-only and fast on tables of millions of rows
(`lists.py`), and the operator's order actions, which go through the order services and are
written to the audit log: cancel an order (its page, or the selected ones), cancel every open
order of an account (from the order list, or the account's page, by URL name)."""

from __future__ import annotations

import datetime

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.models import Account, JournalEntry
from trading.admin.display import account_link, admin_link, search_link, table
from trading.admin.lists import BigTableAdmin, SearchTerm
from trading.exceptions import TradingError
from trading.models import Order, Position, Trade
from trading.services import cancel_all, order_cancel

# At most this many orders (or accounts) per list action: a larger selection is asked again,
# so one request never writes thousands of commands.
ACTION_MAX = 200
# Shown on an order's page, newest first; the rest through the trade list's search.
TRADES_SHOWN = 50
# An order's ledger entries are found by reference between its creation and this long after
# it closed: the matcher posts them in the very batch that closed it (seconds), and the
# bounded window is what lets the journal's created_at index find them.
LEDGER_WINDOW_AFTER_CLOSE = datetime.timedelta(minutes=10)


def order_trades(order: Order) -> QuerySet[Trade]:
    """The order's fills, as maker or taker (each side by its foreign key's index)."""
    return (
        Trade.objects.filter(Q(maker_order_id=order.pk) | Q(taker_order_id=order.pk))
        .select_related("instrument")
        .order_by("-pk")
    )


def order_ledger_entries(order: Order, trades: list[Trade]) -> QuerySet[JournalEntry]:
    """The journal entries the order caused: its holds and releases (`order N`) and its trades
    (`SYMBOL trade SEQ`), found inside its lifetime by the journal's created_at index."""
    references = [f"order {order.pk}"]
    references += [f"{trade.instrument.symbol} trade {trade.seq}" for trade in trades]
    until = (order.closed_at + LEDGER_WINDOW_AFTER_CLOSE) if order.closed_at else timezone.now()
    return JournalEntry.objects.filter(
        created_at__gte=order.created_at, created_at__lte=until, reference__in=references
    ).order_by("pk")


@admin.register(Order)
class OrderAdmin(BigTableAdmin):
    list_display = [
        "id",
        "created_at",
        "account_link",
        "instrument",
        "side",
        "type",
        "quantity",
        "price",
        "filled_quantity",
        "status",
        "client_order_id",
    ]
    list_display_links = ["id"]
    list_select_related = ["account__user", "instrument"]
    # Date: created_at's BRIN index. Status and side have no index of their own: the list walks
    # the primary key's index newest first and stops at a page (decision 0018).
    list_filter = [
        "status",
        "side",
        "type",
        ("created_at", admin.DateFieldListFilter),
        "instrument",
    ]
    readonly_fields = ["fills", "ledger_entries"]
    actions = ["cancel_selected", "cancel_accounts_orders"]

    def search_lookups(self, term: SearchTerm) -> Q | None:
        if term.kind == "id":
            return None if term.number is None else Q(pk=term.number)
        if term.kind in ("account", "user"):
            ids = term.account_ids()
            return Q(account_id__in=ids) if ids else None
        if term.kind == "client":
            return Q(client_order_id=term.text[:64])
        instrument = term.instrument() if term.kind in ("symbol", None) else None
        if instrument is not None:
            return Q(instrument=instrument)
        if term.kind == "symbol":
            return None
        # A bare term: a client order id (order_client_order_id), an order or account id
        # (primary key, order_account_recent) or a username (order_account_recent).
        condition = Q(client_order_id=term.text[:64])
        if term.number is not None:
            condition |= Q(pk=term.number) | Q(account_id=term.number)
        else:
            ids = term.account_ids()
            if ids:
                condition |= Q(account_id__in=ids)
        return condition

    @admin.display(description="account", ordering="account_id")
    def account_link(self, order: Order) -> SafeString:
        return account_link(order.account)

    @admin.display(description="fills (newest first)")
    def fills(self, order: Order) -> SafeString:
        trades = list(order_trades(order)[:TRADES_SHOWN])
        if not trades:
            return SafeString("none")
        rows = [
            (
                admin_link("trading_trade", t.pk, f"{t.instrument.symbol} #{t.seq}"),
                "maker" if t.maker_order_id == order.pk else "taker",
                t.quantity,
                t.price,
                t.executed_at,
                t.settlement_date,
            )
            for t in trades
        ]
        shown = table(["trade", "as", "quantity", "price", "executed", "settles"], rows)
        if len(trades) < TRADES_SHOWN:
            return shown
        more = search_link("trading_trade", f"order:{order.pk}", "every fill of this order")
        return format_html("{}<p>{}</p>", shown, more)

    @admin.display(description="ledger entries")
    def ledger_entries(self, order: Order) -> SafeString:
        trades = list(order_trades(order)[:TRADES_SHOWN])
        entries = order_ledger_entries(order, trades)
        rows = [
            (admin_link("accounts_journalentry", e.pk, f"#{e.pk}"), e.kind, e.reference, e.memo)
            for e in entries
        ]
        return table(["entry", "kind", "reference", "memo"], rows) if rows else SafeString("none")

    # -- the operator's actions ---------------------------------------------------------------
    def has_cancel_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return request.user.has_perm("trading.change_order")

    def _cancel(self, request: HttpRequest, order: Order) -> bool:
        try:
            order_cancel(account=order.account, order_id=order.pk)
        except TradingError as error:
            self.message_user(request, f"Order #{order.pk}: {error.detail}", messages.ERROR)
            return False
        self.log_change(
            request,
            order,
            f"Asked the matcher to cancel order #{order.pk} (client order id "
            f"{order.client_order_id}, account #{order.account_id}) through order_cancel.",
        )
        return True

    def _cancel_all(self, request: HttpRequest, account: Account) -> int:
        try:
            orders = cancel_all(account=account)
        except TradingError as error:
            self.message_user(request, f"Account #{account.pk}: {error.detail}", messages.ERROR)
            return 0
        ids = ", ".join(f"#{order.pk}" for order in orders) or "none open"
        self.log_change(
            request,
            account,
            f"Asked the matcher to cancel every open order of account #{account.pk} through "
            f"cancel_all: {len(orders)} order(s) ({ids}).",
        )
        for order in orders:
            self.log_change(
                request,
                order,
                f"Asked the matcher to cancel it with every open order of "
                f"account #{account.pk} (cancel_all).",
            )
        return len(orders)

    @admin.action(description="Cancel the selected orders", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        chosen = list(
            queryset.filter(status__in=Order.OPEN_STATUSES)
            .select_related("account__user", "instrument")
            .order_by("pk")[: ACTION_MAX + 1]
        )
        if len(chosen) > ACTION_MAX:
            self.message_user(
                request,
                f"More than {ACTION_MAX} open orders selected: narrow the selection, "
                "or cancel an account's orders all at once.",
                messages.ERROR,
            )
            return
        done = sum(self._cancel(request, order) for order in chosen)
        self.message_user(
            request,
            f"Cancel asked for {done} order(s); the matcher applies it."
            if chosen
            else "None of the selected orders is open.",
            messages.SUCCESS if chosen else messages.WARNING,
        )

    @admin.action(
        description="Cancel every open order of the selected orders' accounts",
        permissions=["cancel"],
    )
    def cancel_accounts_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        account_ids = list(
            queryset.order_by().values_list("account_id", flat=True).distinct()[: ACTION_MAX + 1]
        )
        if len(account_ids) > ACTION_MAX:
            self.message_user(request, f"More than {ACTION_MAX} accounts selected.", messages.ERROR)
            return
        for account in Account.objects.filter(pk__in=account_ids).select_related("user"):
            count = self._cancel_all(request, account)
            self.message_user(
                request,
                f"Account #{account.pk}: cancel asked for {count} open order(s).",
                messages.SUCCESS,
            )

    def get_urls(self) -> list:
        own = [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="trading_order_cancel",
            ),
            path(
                "cancel-all/<int:account_id>/",
                self.admin_site.admin_view(self.cancel_all_view),
                name="trading_order_cancel_all",
            ),
        ]
        return own + super().get_urls()

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The "Cancel this order" button of an order's page (POST)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        order = self.get_object(request, unquote(object_id))
        if order is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)  # type: ignore[attr-defined]
        if self._cancel(request, order):
            self.message_user(
                request,
                f"Cancel of order #{order.pk} asked; the matcher applies it.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:trading_order_change", args=[order.pk]))

    def cancel_all_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        """Cancel every open order of one account: a confirmation page, then the service."""
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        account = get_object_or_404(Account.objects.select_related("user"), pk=account_id)
        if request.method == "POST":
            count = self._cancel_all(request, account)
            self.message_user(
                request,
                f"Account #{account.pk}: cancel asked for {count} open order(s); the matcher "
                "applies it.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))
        open_orders = Order.objects.filter(account=account, status__in=Order.OPEN_STATUSES)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cancel every open order of account {account}",
            "opts": self.opts,
            "account": account,
            "open_count": open_orders.count(),
            "orders_url": reverse("admin:trading_order_changelist") + f"?q=account:{account.pk}",
        }
        return TemplateResponse(request, "admin/trading/order/cancel_all.html", context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        order = self.get_object(request, unquote(object_id))
        extra = {
            "can_cancel": order is not None
            and order.is_open
            and self.has_cancel_permission(request, order),
            "cancel_all_url": None
            if order is None
            else reverse("admin:trading_order_cancel_all", args=[order.account_id]),
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


@admin.register(Trade)
class TradeAdmin(BigTableAdmin):
    list_display = [
        "id",
        "executed_at",
        "instrument",
        "seq",
        "price",
        "quantity",
        "aggressor_side",
        "buyer_link",
        "seller_link",
        "settlement_date",
        "settled",
    ]
    list_display_links = ["id"]
    list_select_related = ["instrument", "buyer__user", "seller__user"]
    # Date: executed_at's BRIN index; instrument: trade_seq_per_instrument.
    list_filter = [
        "aggressor_side",
        ("executed_at", admin.DateFieldListFilter),
        "settlement_date",
        "instrument",
    ]
    readonly_fields = ["settlement_state"]

    def search_lookups(self, term: SearchTerm) -> Q | None:
        if term.kind == "id":
            return None if term.number is None else Q(pk=term.number)
        if term.kind in ("account", "user"):
            ids = term.account_ids()
            return Q(buyer_id__in=ids) | Q(seller_id__in=ids) if ids else None
        if term.kind == "client":
            orders = self._orders_with_client_id(term.text)
            return Q(maker_order_id__in=orders) | Q(taker_order_id__in=orders) if orders else None
        instrument = term.instrument() if term.kind in ("symbol", None) else None
        if instrument is not None:
            return Q(instrument=instrument)
        if term.kind == "symbol":
            return None
        condition = Q(pk__in=[])
        if term.number is not None:
            n = term.number
            # A trade, an order (maker_order / taker_order indexes) or an account's trades
            # (trade_buyer_recent, trade_seller_recent).
            condition = (
                Q(pk=n) | Q(maker_order_id=n) | Q(taker_order_id=n) | Q(buyer_id=n) | Q(seller_id=n)
            )
        orders = self._orders_with_client_id(term.text)
        if orders:
            condition |= Q(maker_order_id__in=orders) | Q(taker_order_id__in=orders)
        if term.number is None:
            ids = term.account_ids()
            if ids:
                condition |= Q(buyer_id__in=ids) | Q(seller_id__in=ids)
        return condition

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        # `order:N`: the fills of one order (the link from an order's page).
        kind, _, value = search_term.strip().partition(":")
        if kind.lower() == "order":
            number = SearchTerm(None, value.strip()).number
            if number is None:
                return queryset.none(), False
            return queryset.filter(Q(maker_order_id=number) | Q(taker_order_id=number)), False
        return super().get_search_results(request, queryset, search_term)

    @staticmethod
    def _orders_with_client_id(text: str) -> list[int]:
        return list(
            Order.objects.filter(client_order_id=text[:64]).values_list("pk", flat=True)[:100]
        )

    @admin.display(description="buyer", ordering="buyer_id")
    def buyer_link(self, trade: Trade) -> SafeString:
        return account_link(trade.buyer)

    @admin.display(description="seller", ordering="seller_id")
    def seller_link(self, trade: Trade) -> SafeString:
        return account_link(trade.seller)

    @admin.display(description="settled", boolean=True)
    def settled(self, trade: Trade) -> bool:
        return trade.buyer_settlement_id is not None and trade.seller_settlement_id is not None

    @admin.display(description="settlement")
    def settlement_state(self, trade: Trade) -> SafeString:
        def side(name: str, settlement_id: int | None) -> SafeString:
            if settlement_id is None:
                return format_html("{}: due on {}", name, trade.settlement_date)
            link = admin_link("trading_settlement", settlement_id, f"settlement #{settlement_id}")
            return format_html("{}: settled by {}", name, link)

        return format_html(
            "{}<br>{}",
            side("buyer", trade.buyer_settlement_id),
            side("seller", trade.seller_settlement_id),
        )


@admin.register(Position)
class PositionAdmin(BigTableAdmin):
    list_display = [
        "account_link",
        "instrument",
        "quantity",
        "average_cost",
        "realized_pnl",
        "updated_at",
    ]
    list_display_links = None
    list_select_related = ["account__user", "instrument"]
    # By the ids, as position_account_instrument holds them (ordering by "account" would sort
    # by the related model's own ordering).
    ordering = ["account_id", "instrument_id"]
    list_filter = ["instrument"]
    search_help_text = (
        "An account id, a username or a symbol; or say which with account:, user:, symbol:."
    )

    def search_lookups(self, term: SearchTerm) -> Q | None:
        if term.kind in ("id", "client"):
            return None
        instrument = term.instrument() if term.kind in ("symbol", None) else None
        if instrument is not None:
            return Q(instrument=instrument)
        if term.kind == "symbol":
            return None
        # position_account_instrument leads with the account.
        if term.kind is None and term.number is not None:
            return Q(account_id=term.number)
        ids = term.account_ids()
        return Q(account_id__in=ids) if ids else None

    @admin.display(description="account", ordering="account_id")
    def account_link(self, position: Position) -> SafeString:
        return account_link(position.account)
