"""Trading's invariants, run by accounts' `ledger_verify` (and so by `manage.py ledger_check`)."""

from __future__ import annotations

from types import SimpleNamespace

from accounts.models import Account, Asset, Balance
from accounts.selectors import ledger_check_register
from trading import rules
from trading.models import Instrument, Order, Position, Trade

ORDER, INSTRUMENT, TRADE, POSITION = (
    m._meta.db_table for m in (Order, Instrument, Trade, Position)
)
BALANCE, ASSET = Balance._meta.db_table, Asset._meta.db_table
_OPEN = ", ".join(f"'{status.value}'" for status in Order.OPEN_STATUSES)

# The asset an order holds, as SQL: `rules.hold_asset` itself, applied to an instrument whose
# base and quote are the columns of `i` (so the rule is not written a second time here).
_HOLD_ASSET_ID = (
    "CASE o.side "
    + " ".join(
        f"WHEN '{side.value}' THEN "
        + rules.hold_asset(SimpleNamespace(base="i.base_id", quote="i.quote_id"), side.value)
        for side in Order.Side
    )
    + " END"
)

HELD_EQUALS_OPEN_ORDERS = f"""
    WITH needed AS (
        -- Every (account, asset) an order ever held; a hold made outside trading (the
        -- ledger's own `hold` service) on a pair no order uses is not checked here.
        SELECT o.account_id, {_HOLD_ASSET_ID} AS asset_id,
               SUM(CASE WHEN o.status IN ({_OPEN}) THEN o.held ELSE 0 END
                   + o.held_for_replace) AS held
          FROM {ORDER} o JOIN {INSTRUMENT} i ON i.id = o.instrument_id
         GROUP BY 1, 2
    )
    SELECT b.account_id, a.code, a.precision, b.held, n.held
      FROM (SELECT account_id, asset_id, held FROM {BALANCE}
             WHERE account_kind = '{Account.Kind.CUSTOMER.value}') b
      JOIN needed n ON n.account_id = b.account_id AND n.asset_id = b.asset_id
      JOIN {ASSET} a ON a.id = b.asset_id
     WHERE b.held <> n.held
     ORDER BY 1, 2
"""  # noqa: S608 - table names from model metadata, values from the models' enums

POSITION_EQUALS_FILLS = f"""
    WITH fills AS (
        SELECT account_id, instrument_id, SUM(quantity) AS quantity FROM (
            SELECT buyer_id AS account_id, instrument_id, quantity FROM {TRADE}
            UNION ALL
            SELECT seller_id, instrument_id, -quantity FROM {TRADE}
        ) f GROUP BY 1, 2
    )
    SELECT COALESCE(p.account_id, f.account_id), i.symbol,
           COALESCE(p.quantity, 0), COALESCE(f.quantity, 0)
      FROM {POSITION} p
      FULL OUTER JOIN fills f
        ON f.account_id = p.account_id AND f.instrument_id = p.instrument_id
      JOIN {INSTRUMENT} i ON i.id = COALESCE(p.instrument_id, f.instrument_id)
     WHERE COALESCE(p.quantity, 0) <> COALESCE(f.quantity, 0)
     ORDER BY 1, 2
"""  # noqa: S608 - table names from model metadata

ORDER_FILLED_EQUALS_TRADES = f"""
    WITH fills AS (
        SELECT order_id, SUM(quantity) AS quantity FROM (
            SELECT maker_order_id AS order_id, quantity FROM {TRADE}
            UNION ALL
            SELECT taker_order_id, quantity FROM {TRADE}
        ) f GROUP BY 1
    )
    SELECT o.id, o.filled_quantity, COALESCE(f.quantity, 0)
      FROM {ORDER} o LEFT JOIN fills f ON f.order_id = o.id
     WHERE o.filled_quantity <> COALESCE(f.quantity, 0)
     ORDER BY 1
"""  # noqa: S608 - table names from model metadata


def register() -> None:
    ledger_check_register(
        invariant="held_equals_open_orders",
        sql=HELD_EQUALS_OPEN_ORDERS,
        template="account #{0} {1}: held is {3} but its open orders hold {4}",
        precision_column=2,
    )
    ledger_check_register(
        invariant="position_equals_fills",
        sql=POSITION_EQUALS_FILLS,
        template="account #{0} {1}: position is {2} but its fills sum to {3}",
    )
    ledger_check_register(
        invariant="order_filled_equals_trades",
        sql=ORDER_FILLED_EQUALS_TRADES,
        template="order #{0}: filled {1} but its trades sum to {2}",
    )
