"""Writes for trading, each a service the views, commands, tasks and the market maker call.

- `placing.py`: `order_place` (validate, hold, write the order and its command at once);
- `orders.py`: cancel, replace, cancel all, and the end of the trading day's DAY orders;
- `instruments.py`: halting and resuming, and the reference prices the band is centred on;
- `inputs.py`: numbers and choices as a client sends them, checked.

The order services never touch the book: the matcher (`trading/matching/`) applies the
commands they write (docs/architecture.md §4).
"""

from trading.services.instruments import instrument_get, instrument_status_set, reference_prices_set
from trading.services.orders import cancel_all, day_orders_expire, order_cancel, order_replace
from trading.services.placing import CLIENT_ORDER_ID_RE, generated_client_order_id, order_place

__all__ = [
    "CLIENT_ORDER_ID_RE",
    "cancel_all",
    "day_orders_expire",
    "generated_client_order_id",
    "instrument_get",
    "instrument_status_set",
    "order_cancel",
    "order_place",
    "order_replace",
    "reference_prices_set",
]
