"""What the deposit and withdraw commands share: parse, call one service, report."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from accounts import selectors
from accounts.exceptions import LedgerError
from accounts.models import Account, JournalEntry
from accounts.services import amount_format, asset_resolve


def decimal_argument(text: str) -> Decimal:
    try:
        value = Decimal(text.replace("_", "").strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal amount") from None
    return value


def customer_account(*, account_id: int | None, username: str | None) -> Account:
    """The customer account named by --account or --user; CommandError for any other."""
    if account_id is not None:
        account = selectors.account_get(account_id=account_id)
        if account is None:
            raise CommandError(f"no account with id {account_id}")
    else:
        account = selectors.account_get(username=username)
        if account is None:
            raise CommandError(f"user {username!r} does not exist or has no account")
    if account.kind != Account.Kind.CUSTOMER:
        raise CommandError(f"account #{account.pk} is the {account.kind} platform account")
    return account


class MovementCommand(BaseCommand):
    verb = ""  # "Deposited" / "Withdrew"
    preposition = ""  # "to" / "from"
    service: Callable[..., JournalEntry]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the account owner")
        who.add_argument("--account", type=int, help="account id")
        parser.add_argument("--asset", required=True, help="asset code, e.g. USD")
        parser.add_argument(
            "--amount",
            required=True,
            type=decimal_argument,
            help="amount with at most the asset's decimal places, e.g. 1500.00",
        )
        parser.add_argument(
            "--reference", required=True, help="what this is for: a bank transfer id, a ticket"
        )
        parser.add_argument("--memo", default="", help="a note kept with the journal entry")
        parser.add_argument(
            "--idempotency-key",
            help="repeat the command with the same key and it is applied once "
            "(default: a new random key, printed)",
        )

    def handle(
        self,
        *args: object,
        user: str | None,
        account: int | None,
        asset: str,
        amount: Decimal,
        reference: str,
        memo: str,
        idempotency_key: str | None,
        **options: object,
    ) -> None:
        customer = customer_account(account_id=account, username=user)
        owner = customer.user.get_username() if customer.user is not None else "?"
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        try:
            resolved = asset_resolve(asset)
            entry = type(self).service(
                account=customer,
                asset=resolved,
                amount=amount,
                reference=reference,
                memo=memo,
                idempotency_key=key,
            )
        except LedgerError as error:
            raise CommandError(f"{error.code}: {error.detail}") from error
        balance = selectors.balance_get(account=customer, asset=resolved)
        self.stdout.write(
            f"{self.verb} {amount_format(amount, resolved)} {self.preposition} "
            f"account #{customer.pk} ({owner}): journal entry #{entry.pk} "
            f"(idempotency key {key})"
        )
        self.stdout.write(
            f"available {amount_format(balance.available, resolved)}, "
            f"held {amount_format(balance.held, resolved)}, "
            f"pending {amount_format(balance.pending, resolved)}"
        )
