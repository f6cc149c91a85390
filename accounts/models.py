from django.db import models


class Asset(models.Model):
    """Something an account can hold: a currency, a share, a coin."""

    code = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=64)
    # Decimal places an amount of this asset may carry; more is rejected, never rounded.
    precision = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(precision__lte=18), name="asset_precision_at_most_18"
            ),
        ]

    def __str__(self) -> str:
        return self.code
