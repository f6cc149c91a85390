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
