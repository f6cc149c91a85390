"""Trading owns the reference price its band is centred on (issue 11: apps import one way).

It was read from the feed's price model (marketdata) in the placement SQL; the feed now sets it
through `trading.services.reference_prices_set`. Marketdata migration 0002 copies today's
prices over.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("trading", "0008_instrument_rules_version")]

    operations = [
        migrations.AddField(
            model_name="instrument",
            name="reference_price",
            field=models.DecimalField(
                blank=True, decimal_places=10, editable=False, max_digits=30, null=True
            ),
        ),
        migrations.AddField(
            model_name="instrument",
            name="reference_price_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
