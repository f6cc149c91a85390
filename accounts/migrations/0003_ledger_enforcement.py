"""PostgreSQL enforces the ledger's rules, so a bug elsewhere cannot break them.

- Every journal entry sums to zero per asset and has at least one posting: DEFERRABLE
  INITIALLY DEFERRED constraint triggers, checked at commit (after all of an entry's postings
  are in).
- A posting carries no more decimals than its asset allows.
- Journal entries, postings and idempotency keys are append-only: UPDATE and DELETE raise.
  (TRUNCATE is left to operators and test teardown.)
- Balance.account_kind is pinned to Account.kind by a composite foreign key, so the
  non-negative checks that exempt the `external` account cannot be fooled.
"""

from django.db import migrations

ENTRY_BALANCED = """
CREATE FUNCTION accounts_entry_must_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT asset.code AS asset_code, SUM(posting.amount) AS total
      INTO unbalanced
      FROM accounts_posting posting
      JOIN accounts_asset asset ON asset.id = posting.asset_id
     WHERE posting.entry_id = NEW.entry_id
     GROUP BY asset.code
    HAVING SUM(posting.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            NEW.entry_id, unbalanced.asset_code, unbalanced.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'posting_entry_balanced';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER posting_entry_balanced
    AFTER INSERT ON accounts_posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION accounts_entry_must_balance();

CREATE FUNCTION accounts_entry_must_have_postings() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM accounts_posting WHERE entry_id = NEW.id) THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_entry_has_postings';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER journal_entry_has_postings
    AFTER INSERT ON accounts_journalentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION accounts_entry_must_have_postings();
"""

ENTRY_BALANCED_REVERSE = """
DROP TRIGGER IF EXISTS journal_entry_has_postings ON accounts_journalentry;
DROP FUNCTION IF EXISTS accounts_entry_must_have_postings();
DROP TRIGGER IF EXISTS posting_entry_balanced ON accounts_posting;
DROP FUNCTION IF EXISTS accounts_entry_must_balance();
"""

POSTING_PRECISION = """
CREATE FUNCTION accounts_posting_within_precision() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    places integer;
BEGIN
    SELECT precision INTO places FROM accounts_asset WHERE id = NEW.asset_id;
    IF NEW.amount <> round(NEW.amount, places) THEN
        RAISE EXCEPTION 'posting amount % has more than % decimal places', NEW.amount, places
            USING ERRCODE = 'check_violation', CONSTRAINT = 'posting_within_asset_precision';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER posting_within_asset_precision
    BEFORE INSERT ON accounts_posting
    FOR EACH ROW EXECUTE FUNCTION accounts_posting_within_precision();
"""

POSTING_PRECISION_REVERSE = """
DROP TRIGGER IF EXISTS posting_within_asset_precision ON accounts_posting;
DROP FUNCTION IF EXISTS accounts_posting_within_precision();
"""

APPEND_ONLY = """
CREATE FUNCTION accounts_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER journal_entry_append_only
    BEFORE UPDATE OR DELETE ON accounts_journalentry
    FOR EACH ROW EXECUTE FUNCTION accounts_ledger_append_only();
CREATE TRIGGER posting_append_only
    BEFORE UPDATE OR DELETE ON accounts_posting
    FOR EACH ROW EXECUTE FUNCTION accounts_ledger_append_only();
CREATE TRIGGER idempotency_key_append_only
    BEFORE UPDATE OR DELETE ON accounts_idempotencykey
    FOR EACH ROW EXECUTE FUNCTION accounts_ledger_append_only();
"""

APPEND_ONLY_REVERSE = """
DROP TRIGGER IF EXISTS idempotency_key_append_only ON accounts_idempotencykey;
DROP TRIGGER IF EXISTS posting_append_only ON accounts_posting;
DROP TRIGGER IF EXISTS journal_entry_append_only ON accounts_journalentry;
DROP FUNCTION IF EXISTS accounts_ledger_append_only();
"""

BALANCE_KIND_PINNED = """
ALTER TABLE accounts_balance
    ADD CONSTRAINT balance_account_kind_matches
    FOREIGN KEY (account_id, account_kind) REFERENCES accounts_account (id, kind);
"""

BALANCE_KIND_PINNED_REVERSE = """
ALTER TABLE accounts_balance DROP CONSTRAINT IF EXISTS balance_account_kind_matches;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_ledger"),
    ]

    operations = [
        migrations.RunSQL(ENTRY_BALANCED, ENTRY_BALANCED_REVERSE),
        migrations.RunSQL(POSTING_PRECISION, POSTING_PRECISION_REVERSE),
        migrations.RunSQL(APPEND_ONLY, APPEND_ONLY_REVERSE),
        migrations.RunSQL(BALANCE_KIND_PINNED, BALANCE_KIND_PINNED_REVERSE),
    ]
