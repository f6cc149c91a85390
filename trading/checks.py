"""Trading's invariants, run by accounts' `ledger_verify` (and so by `manage.py ledger_check`)."""

from __future__ import annotations

from accounts.selectors import ledger_check_register
from trading import sql


def register() -> None:
    ledger_check_register(
        invariant="held_equals_open_orders",
        sql=sql.HELD_EQUALS_OPEN_ORDERS,
        template="account #{0} {1}: held is {3} but its open orders hold {4}",
        precision_column=2,
    )
    ledger_check_register(
        invariant="position_equals_fills",
        sql=sql.POSITION_EQUALS_FILLS,
        template="account #{0} {1}: position is {2} but its fills sum to {3}",
    )
    ledger_check_register(
        invariant="order_filled_equals_trades",
        sql=sql.ORDER_FILLED_EQUALS_TRADES,
        template="order #{0}: filled {1} but its trades sum to {2}",
    )
