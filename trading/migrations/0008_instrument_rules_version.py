"""Instrument.rules_version: one number the placement write checks instead of every rule.

PostgreSQL bumps it whenever one of the rule columns changes, by the rules service, the admin,
the shell or raw SQL alike; a write that sets it without changing a rule keeps the old value.
The columns are `trading.rules.RULE_FIELDS` as of this migration.
"""

from django.db import migrations, models

RULE_COLUMNS = (
    "tick_size",
    "lot_size",
    "min_quantity",
    "max_quantity",
    "price_band_pct",
    "maker_fee_rate",
    "taker_fee_rate",
)
CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in RULE_COLUMNS)

BUMP = f"""
CREATE FUNCTION trading_instrument_rules_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF {CHANGED} THEN
        NEW.rules_version := OLD.rules_version + 1;
    ELSE
        NEW.rules_version := OLD.rules_version;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER instrument_rules_version
    BEFORE UPDATE ON trading_instrument
    FOR EACH ROW EXECUTE FUNCTION trading_instrument_rules_version();
"""

BUMP_REVERSE = """
DROP TRIGGER IF EXISTS instrument_rules_version ON trading_instrument;
DROP FUNCTION IF EXISTS trading_instrument_rules_version();
"""


class Migration(migrations.Migration):
    dependencies = [("trading", "0007_reference_data")]

    operations = [
        migrations.AddField(
            model_name="instrument",
            name="rules_version",
            field=models.PositiveBigIntegerField(default=1, editable=False),
        ),
        migrations.RunSQL(BUMP, BUMP_REVERSE),
    ]
