"""Reference data that money depends on cannot change under it (issue 10; decision 0010).

- Each order records the fee rates it was placed under (`maker_fee_rate`, `taker_fee_rate`):
  its hold covers the larger of them and its fills pay them, so a later change of the
  instrument's fees applies to new orders only. Existing orders get their instrument's rates of
  today, the rates their holds were computed with.
- An instrument's base and quote cannot change once an order was placed on it.
- (Tick size and lot size change through `trading.reference.instrument_rules_change`, which
  refuses while the book has open orders; the matcher rejects or cancels an order off its grid
  instead of failing on it, whatever changed the rules.)
- An asset that an instrument refers to keeps its precision (accounts migration 0007 does the
  same for balances and postings).

Each trigger first locks the row it guards FOR UPDATE, which waits for the transactions that
have just inserted a row referring to it (their foreign key check holds FOR KEY SHARE until
commit), so a reference being committed at this moment is seen.
"""

from decimal import Decimal

from django.db import migrations, models

BACKFILL = """
UPDATE trading_order o
   SET maker_fee_rate = i.maker_fee_rate, taker_fee_rate = i.taker_fee_rate
  FROM trading_instrument i
 WHERE i.id = o.instrument_id
"""

INSTRUMENT_GUARDS = """
CREATE FUNCTION trading_instrument_assets_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM trading_instrument WHERE id = OLD.id FOR UPDATE;
    -- No index leads with the instrument for every order (decision 0008): a scan, but only
    -- when base or quote really change, which is refused once anything was traded.
    IF EXISTS (SELECT 1 FROM trading_order WHERE instrument_id = OLD.id) THEN
        RAISE EXCEPTION 'instrument % has orders: its base and quote cannot change', OLD.symbol
            USING ERRCODE = 'restrict_violation',
                  CONSTRAINT = 'instrument_assets_fixed_once_used',
                  HINT = 'Create a new instrument instead.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER instrument_assets_fixed_once_used
    BEFORE UPDATE OF base_id, quote_id ON trading_instrument
    FOR EACH ROW WHEN (OLD.base_id IS DISTINCT FROM NEW.base_id
                       OR OLD.quote_id IS DISTINCT FROM NEW.quote_id)
    EXECUTE FUNCTION trading_instrument_assets_fixed();

CREATE FUNCTION trading_asset_precision_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM accounts_asset WHERE id = OLD.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM trading_instrument WHERE base_id = OLD.id OR quote_id = OLD.id) THEN
        RAISE EXCEPTION 'asset % is in use (instruments refer to it): its precision % cannot '
                        'change to %', OLD.code, OLD.precision, NEW.precision
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'asset_precision_fixed_once_used',
                  HINT = 'Create a new asset instead.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER asset_precision_fixed_by_instruments
    BEFORE UPDATE OF precision ON accounts_asset
    FOR EACH ROW WHEN (OLD.precision IS DISTINCT FROM NEW.precision)
    EXECUTE FUNCTION trading_asset_precision_fixed();
"""

INSTRUMENT_GUARDS_REVERSE = """
DROP TRIGGER IF EXISTS asset_precision_fixed_by_instruments ON accounts_asset;
DROP FUNCTION IF EXISTS trading_asset_precision_fixed();
DROP TRIGGER IF EXISTS instrument_assets_fixed_once_used ON trading_instrument;
DROP FUNCTION IF EXISTS trading_instrument_assets_fixed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_asset_precision_fixed"),
        ("trading", "0006_outbox_notify"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="maker_fee_rate",
            field=models.DecimalField(decimal_places=6, default=Decimal("0"), max_digits=8),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="order",
            name="taker_fee_rate",
            field=models.DecimalField(decimal_places=6, default=Decimal("0"), max_digits=8),
            preserve_default=False,
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("maker_fee_rate__gte", 0),
                    ("maker_fee_rate__lt", 1),
                    ("taker_fee_rate__gte", 0),
                    ("taker_fee_rate__lt", 1),
                ),
                name="order_fee_rates_in_range",
            ),
        ),
        migrations.RunSQL(INSTRUMENT_GUARDS, INSTRUMENT_GUARDS_REVERSE),
    ]
