"""PostgreSQL refuses to change the precision of an asset that is used.

Amounts of an asset are booked, held and rounded to its precision: postings carry at most that
many decimals (migration 0006), holds and fills are rounded to it, and `ledger_check` reads it.
Changing it under existing balances broke `ledger_check` and made the matcher dead-letter live
commands (issue 10). So once a balance or a posting refers to an asset, an UPDATE that changes
its precision raises, whoever runs it (admin, shell, raw SQL). Trading adds instruments to the
references that fix it (its migration 0007_reference_data).

The trigger first locks the asset row FOR UPDATE: that waits for every transaction that has
just inserted a row referring to it (a foreign key check holds FOR KEY SHARE on the asset until
commit) and makes new ones wait for this one; so a reference being committed at this moment
is seen, and a posting committed after the change is checked against the new precision.
"""

from django.db import migrations

PRECISION_FIXED = """
CREATE FUNCTION accounts_asset_precision_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    used_by text;
BEGIN
    PERFORM 1 FROM accounts_asset WHERE id = OLD.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM accounts_balance WHERE asset_id = OLD.id) THEN
        used_by := 'balances';
    -- Postings have no index by asset: read only when no balance refers to the asset (every
    -- posting moves a balance, so this finds nothing unless one was written by hand).
    ELSIF EXISTS (SELECT 1 FROM accounts_posting WHERE asset_id = OLD.id) THEN
        used_by := 'postings';
    END IF;
    IF used_by IS NOT NULL THEN
        RAISE EXCEPTION 'asset % is in use (% refer to it): its precision % cannot change to %',
            OLD.code, used_by, OLD.precision, NEW.precision
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'asset_precision_fixed_once_used',
                  HINT = 'Create a new asset instead.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER asset_precision_fixed_once_used
    BEFORE UPDATE OF precision ON accounts_asset
    FOR EACH ROW WHEN (OLD.precision IS DISTINCT FROM NEW.precision)
    EXECUTE FUNCTION accounts_asset_precision_fixed();
"""

PRECISION_FIXED_REVERSE = """
DROP TRIGGER IF EXISTS asset_precision_fixed_once_used ON accounts_asset;
DROP FUNCTION IF EXISTS accounts_asset_precision_fixed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_ledger_rules_per_statement"),
    ]

    operations = [
        migrations.RunSQL(PRECISION_FIXED, PRECISION_FIXED_REVERSE),
    ]
