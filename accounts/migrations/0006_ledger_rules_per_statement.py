"""The ledger's rules are checked once per statement instead of once per row.

0003 checked them with row triggers: a BEFORE trigger per posting for its precision, a deferred
trigger per posting that summed the whole entry again (an entry of five postings was summed five
times at commit), and a deferred trigger per entry for "has postings". On the order path those
were about an eighth of the CPU of every `order_place` and of every matcher batch
(docs/decisions/0008-order-path-round-trips.md).

Now two statement triggers read the statement's new rows from transition tables:

- `posting_rules` (after INSERT on postings): every new posting carries no more decimals than
  its asset allows, and every entry it touches sums to zero per asset, counting all of the
  entry's postings.
- `journal_entry_has_postings` (after INSERT on entries): every new entry has a posting.

So an entry and all its postings are written by ONE statement (`ledger_post` and
`order_place` do: a CTE inserts the entry and its postings); the rules hold at the end of it.
Postings added to an entry by a later statement, even in the same transaction, unbalance it and
are refused.
"""

import importlib

from django.db import migrations

# The row triggers this replaces, recreated by the reverse migration.
old = importlib.import_module("accounts.migrations.0003_ledger_enforcement")

RULES = """
DROP TRIGGER posting_entry_balanced ON accounts_posting;
DROP FUNCTION accounts_entry_must_balance();
DROP TRIGGER journal_entry_has_postings ON accounts_journalentry;
DROP FUNCTION accounts_entry_must_have_postings();
DROP TRIGGER posting_within_asset_precision ON accounts_posting;
DROP FUNCTION accounts_posting_within_precision();

CREATE FUNCTION accounts_postings_follow_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT inserted.amount, asset.precision
      INTO bad
      FROM inserted
      JOIN accounts_asset asset ON asset.id = inserted.asset_id
     WHERE inserted.amount <> round(inserted.amount, asset.precision)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting amount % has more than % decimal places',
            bad.amount, bad.precision
            USING ERRCODE = 'check_violation', CONSTRAINT = 'posting_within_asset_precision';
    END IF;
    -- Entry by entry through the entry_id index (LATERAL: never a scan of all postings).
    SELECT touched.entry_id, sums.asset_code, sums.total
      INTO bad
      FROM (SELECT DISTINCT entry_id FROM inserted) AS touched,
           LATERAL (
               SELECT asset.code AS asset_code, SUM(posting.amount) AS total
                 FROM accounts_posting posting
                 JOIN accounts_asset asset ON asset.id = posting.asset_id
                WHERE posting.entry_id = touched.entry_id
                GROUP BY asset.code
               HAVING SUM(posting.amount) <> 0
           ) AS sums
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            bad.entry_id, bad.asset_code, bad.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'posting_entry_balanced';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER posting_rules
    AFTER INSERT ON accounts_posting
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_postings_follow_rules();

CREATE FUNCTION accounts_entries_have_postings() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    empty bigint;
BEGIN
    -- OFFSET 0 keeps the EXISTS a per-entry index probe (never an anti-join over all postings).
    SELECT inserted.id INTO empty
      FROM inserted
     WHERE NOT EXISTS (
           SELECT 1 FROM accounts_posting WHERE entry_id = inserted.id OFFSET 0)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % has no postings', empty
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_entry_has_postings';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER journal_entry_has_postings
    AFTER INSERT ON accounts_journalentry
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_entries_have_postings();
"""

RULES_REVERSE = (
    """
DROP TRIGGER posting_rules ON accounts_posting;
DROP FUNCTION accounts_postings_follow_rules();
DROP TRIGGER journal_entry_has_postings ON accounts_journalentry;
DROP FUNCTION accounts_entries_have_postings();
"""
    + old.ENTRY_BALANCED
    + old.POSTING_PRECISION
)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_drop_redundant_indexes"),
    ]

    operations = [migrations.RunSQL(RULES, RULES_REVERSE)]
