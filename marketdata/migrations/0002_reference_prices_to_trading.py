"""The feed's prices become trading's reference prices (trading migration 0009)."""

from django.db import migrations

COPY = """
UPDATE trading_instrument i
   SET reference_price = COALESCE(pm.last_price, pm.initial_price), reference_price_at = now()
  FROM marketdata_pricemodel pm
 WHERE pm.instrument_id = i.id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("marketdata", "0001_initial"),
        ("trading", "0009_instrument_reference_price"),
    ]

    operations = [migrations.RunSQL(COPY, migrations.RunSQL.noop)]
