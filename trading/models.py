from django.db import models

from accounts.models import Asset


class Instrument(models.Model):
    """A tradable pair: `base` priced in `quote`, with its tick and lot sizes."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        HALTED = "halted", "Halted"
        CLOSED = "closed", "Closed"

    symbol = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=128)
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    tick_size = models.DecimalField(max_digits=20, decimal_places=10)
    lot_size = models.DecimalField(max_digits=20, decimal_places=10)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=models.Q(tick_size__gt=0), name="tick_size_positive"),
            models.CheckConstraint(condition=models.Q(lot_size__gt=0), name="lot_size_positive"),
            models.CheckConstraint(
                condition=~models.Q(base=models.F("quote")), name="base_differs_from_quote"
            ),
            # Channel and group names allow only these characters.
            models.CheckConstraint(
                condition=models.Q(symbol__regex=r"^[A-Z0-9][A-Z0-9._-]*$"),
                name="symbol_charset",
            ),
        ]

    def __str__(self) -> str:
        return self.symbol
