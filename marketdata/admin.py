from django.contrib import admin
from django.http import HttpRequest

from marketdata.models import Candle, PriceModel


@admin.register(PriceModel)
class PriceModelAdmin(admin.ModelAdmin):
    list_display = ["instrument", "initial_price", "last_price", "annual_volatility", "spread_bps"]
    readonly_fields = ["last_price", "session_open", "updated_at"]


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin):
    """Read-only: bars are built from trades (`manage.py candles_backfill` rebuilds them)."""

    list_display = ["instrument", "interval", "start", "open", "high", "low", "close", "volume"]
    list_filter = ["interval"]
    search_fields = ["instrument__symbol"]
    ordering = ["-start"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
