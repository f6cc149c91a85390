from django.contrib import admin

from trading.models import Instrument


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "base", "quote", "tick_size", "lot_size", "status"]
    list_filter = ["status"]
    search_fields = ["symbol", "name"]
