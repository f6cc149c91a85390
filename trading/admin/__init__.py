"""The back office in the Django admin (docs/decisions/0018-back-office.md).

- `instruments.py`: instruments (halt, resume, close; trading rules; settlement days);
- `orders.py`: orders, trades and positions, read-only and fast on large tables (`lists.py`),
  with the operator's order actions through the order services;
- `settlement.py`: settlements, daily statements, the holiday list, reconciliation runs and
  breaks (a count badge of the open ones on the admin index: `templates/admin/index.html`);
- `operations.py`: dead letters, checkpoints and the "Processes and checkpoints" page.

Every operator action goes through a service and is written to the admin log, shown as the
"Audit log" (`accounts/admin.py`).
"""

from trading.admin import instruments, operations, orders, settlement

__all__ = ["instruments", "operations", "orders", "settlement"]
