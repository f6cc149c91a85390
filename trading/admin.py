from django.contrib import admin, messages

from trading.exceptions import TradingError
from trading.models import Instrument
from trading.services import instrument_status_set


def _status_action(status: str, verb: str):  # noqa: ANN202
    @admin.action(description=f"{verb} the selected instruments", permissions=["change"])
    def action(modeladmin, request, queryset) -> None:  # noqa: ANN001
        done = []
        for symbol in queryset.values_list("symbol", flat=True):
            try:
                done.append(instrument_status_set(symbol=symbol, status=status).symbol)
            except TradingError as error:
                modeladmin.message_user(request, f"{symbol}: {error.detail}", messages.ERROR)
        if done:
            modeladmin.message_user(request, f"{', '.join(done)}: now {status}", messages.SUCCESS)

    action.__name__ = f"instruments_{status}"
    return action


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = [
        "symbol",
        "name",
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_quantity",
        "max_quantity",
        "price_band_pct",
        "maker_fee_rate",
        "taker_fee_rate",
        "status",
    ]
    list_filter = ["status"]
    search_fields = ["symbol", "name"]
    # Status changes go through the service (halt / resume / close), not the edit form.
    readonly_fields = ["status"]
    actions = [
        _status_action(Instrument.Status.HALTED, "Halt"),
        _status_action(Instrument.Status.OPEN, "Resume"),
        _status_action(Instrument.Status.CLOSED, "Close"),
    ]
