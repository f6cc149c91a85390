from django.contrib import admin

from marketdata.models import PriceModel


@admin.register(PriceModel)
class PriceModelAdmin(admin.ModelAdmin):
    list_display = ["instrument", "initial_price", "last_price", "annual_volatility", "spread_bps"]
    readonly_fields = ["last_price", "session_open", "updated_at"]
