"""Errors the accounts services raise; each carries a machine-readable `code`.

Views map them to a 4xx with the code, management commands to a CommandError; in every case
the transaction that raised one has changed nothing.
"""

from __future__ import annotations


class LedgerError(Exception):
    """A ledger call was refused; nothing was written."""

    code = "ledger_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


class InvalidAmount(LedgerError):
    """Not a positive Decimal within the asset's precision (floats are refused outright)."""

    code = "invalid_amount"


class UnknownAsset(LedgerError):
    code = "unknown_asset"


class UnknownAccount(LedgerError):
    code = "unknown_account"


class AccountFrozen(LedgerError):
    """The account is frozen: it keeps its money but may not hold or withdraw it."""

    code = "account_frozen"


class InsufficientFunds(LedgerError):
    """A bucket would go below zero."""

    code = "insufficient_funds"


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a call with different arguments."""

    code = "idempotency_conflict"


class InvalidEntry(LedgerError):
    """A journal entry that could never be posted: unbalanced, empty, or moving nothing."""

    code = "invalid_entry"
