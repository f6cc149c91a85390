from django.db import models

from trading.models import Instrument


class PriceModel(models.Model):
    """How the simulated reference feed moves one instrument (geometric Brownian motion)."""

    instrument = models.OneToOneField(
        Instrument, on_delete=models.CASCADE, related_name="price_model"
    )
    initial_price = models.DecimalField(max_digits=20, decimal_places=10)
    # Annualised volatility, e.g. 0.25 for 25 %.
    annual_volatility = models.DecimalField(max_digits=6, decimal_places=4)
    spread_bps = models.PositiveIntegerField(help_text="Bid/ask spread in basis points.")
    typical_size = models.DecimalField(
        max_digits=20, decimal_places=10, help_text="Typical size quoted on each side."
    )
    # Where the last run of the feed left the price, so a restart carries on from there.
    last_price = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    session_open = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(initial_price__gt=0), name="initial_price_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(annual_volatility__gte=0), name="volatility_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(typical_size__gt=0), name="typical_size_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"price model of {self.instrument_id}"


class Candle(models.Model):
    """One OHLCV bar of one instrument, built from its trades by `marketdata.candles`.

    Written only through `marketdata.candle_store` (the builder's bars, idempotent by
    `last_trade_seq`); read as history by the candles endpoint.
    """

    class Interval(models.TextChoices):
        S1 = "1s", "1 second"
        M1 = "1m", "1 minute"
        M5 = "5m", "5 minutes"
        H1 = "1h", "1 hour"

    # Indexed by `candle_per_interval_start`, which leads with it.
    instrument = models.ForeignKey(
        Instrument, on_delete=models.CASCADE, related_name="candles", db_index=False
    )
    interval = models.CharField(max_length=3, choices=Interval.choices)
    start = models.DateTimeField()
    open = models.DecimalField(max_digits=30, decimal_places=10)
    high = models.DecimalField(max_digits=30, decimal_places=10)
    low = models.DecimalField(max_digits=30, decimal_places=10)
    close = models.DecimalField(max_digits=30, decimal_places=10)
    volume = models.DecimalField(max_digits=30, decimal_places=10)
    quote_volume = models.DecimalField(max_digits=30, decimal_places=10)
    trades = models.PositiveIntegerField()
    # The seq of the last trade counted: a trade at or below it is not counted again.
    last_trade_seq = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instrument", "interval", "start"]
        constraints = [
            # Also the index of range reads: (instrument, interval) equal, start a range.
            models.UniqueConstraint(
                fields=["instrument", "interval", "start"], name="candle_per_interval_start"
            ),
            models.CheckConstraint(
                condition=models.Q(low__gt=0)
                & models.Q(low__lte=models.F("high"))
                & models.Q(volume__gt=0)
                & models.Q(trades__gt=0),
                name="candle_values_sane",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.interval} {self.start:%Y-%m-%d %H:%M:%S}"
