"""Errors the trading services raise; each carries a machine-readable `code`.

Views map them to a 4xx with the code; in every case the transaction that raised one has
changed nothing.
"""

from __future__ import annotations


class TradingError(Exception):
    """A trading request was refused; nothing was written."""

    code = "trading_error"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


class OrderRejected(TradingError):
    """The order breaks a rule of the venue or the instrument (see `code`)."""

    code = "order_rejected"


class UnknownInstrument(TradingError):
    code = "unknown_instrument"
    status = 404


class UnknownOrder(TradingError):
    """No such order for this account (another account's order is unknown too)."""

    code = "unknown_order"
    status = 404


class OrderNotOpen(TradingError):
    """The order is already final, or not yet live in the book."""

    code = "order_not_open"
    status = 409


class ClientOrderIdConflict(TradingError):
    """The account used this client order id before, for an order with other parameters."""

    code = "client_order_id_conflict"
    status = 409


class BreakNotResolvable(TradingError, ValueError):
    """A reconciliation break cannot be resolved so: no note, unknown, or resolved already."""

    code = "break_not_resolvable"
    status = 409
