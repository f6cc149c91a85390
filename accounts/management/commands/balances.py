"""Print balances as a table (operators)."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand

from accounts import selectors


class Command(BaseCommand):
    help = "Print available, held and pending balances per account and asset."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", help="only this user's account")
        parser.add_argument("--asset", help="only this asset code")
        parser.add_argument(
            "--platform",
            action="store_true",
            help="include the platform accounts (external, fees, clearing)",
        )

    def handle(
        self,
        *args: object,
        user: str | None,
        asset: str | None,
        platform: bool,
        **options: object,
    ) -> None:
        balances = selectors.balance_table(
            username=user, asset_code=asset, include_platform=platform
        )
        header = ["account", "owner", "status", "asset", "available", "held", "pending", "total"]
        rows = []
        for balance in balances:
            account = balance.account
            places = balance.asset.precision
            rows.append(
                [
                    f"#{account.pk}",
                    account.user.get_username()
                    if account.user is not None
                    else f"({account.kind})",
                    account.status,
                    balance.asset.code,
                    *(
                        f"{value:,.{places}f}"
                        for value in (
                            balance.available,
                            balance.held,
                            balance.pending,
                            balance.total,
                        )
                    ),
                ]
            )
        if not rows:
            self.stdout.write("no balances")
            return
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)
        ]
        numeric = {4, 5, 6, 7}

        def line(cells: list[str]) -> str:
            return "  ".join(
                cell.rjust(width) if index in numeric else cell.ljust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        self.stdout.write(line(header))
        self.stdout.write(line(["-" * width for width in widths]))
        for row in rows:
            self.stdout.write(line(row))
