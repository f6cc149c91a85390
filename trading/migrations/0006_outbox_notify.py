"""A committed command wakes the outbox relay (LISTEN/NOTIFY) instead of its polling.

The relay polled the outbox every 5 ms: 200 queries a second at rest, and up to 5 ms on every
order's way. A row trigger on the commands (only `orders` rows: the matcher relays its own
events) notifies the channel; PostgreSQL delivers notifications at commit, and one per
channel and payload per transaction.
"""

from django.db import migrations

CHANNEL = "trading_outbox_orders"

CREATE = f"""
CREATE FUNCTION trading_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$;
CREATE TRIGGER trading_outbox_notify AFTER INSERT ON trading_outbox
    FOR EACH ROW WHEN (NEW.topic = 'orders') EXECUTE FUNCTION trading_outbox_notify();
"""

DROP = """
DROP TRIGGER trading_outbox_notify ON trading_outbox;
DROP FUNCTION trading_outbox_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("trading", "0005_commands_applied_and_topic_ids")]

    operations = [migrations.RunSQL(CREATE, DROP)]
