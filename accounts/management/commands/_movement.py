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


def account_from_options(options: dict) -> Account:
    if options["account"] is not None:
        account = selectors.account_get(account_id=options["account"])
        if account is None:
            raise CommandError(f"no account with id {options['account']}")
    else:
        account = selectors.account_get(username=options["user"])
        if account is None:
            raise CommandError(f"user {options['user']!r} does not exist or has no account")
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

    def handle(self, *args: object, **options: object) -> None:
        account = account_from_options(options)
        key = options["idempotency_key"] or f"cli-{uuid.uuid4()}"
        try:
            asset = asset_resolve(options["asset"])
            entry = type(self).service(
                account=account,
                asset=asset,
                amount=options["amount"],
                reference=options["reference"],
                memo=options["memo"],
                idempotency_key=key,
            )
        except LedgerError as error:
            raise CommandError(f"{error.code}: {error.detail}") from error
        balance = selectors.balance_get(account=account, asset=asset)
        self.stdout.write(
            f"{self.verb} {amount_format(options['amount'], asset)} {self.preposition} "
            f"account #{account.pk} ({account.user.get_username()}): journal entry #{entry.pk} "
            f"(idempotency key {key})"
        )
        self.stdout.write(
            f"available {amount_format(balance.available, asset)}, "
            f"held {amount_format(balance.held, asset)}, "
            f"pending {amount_format(balance.pending, asset)}"
        )
