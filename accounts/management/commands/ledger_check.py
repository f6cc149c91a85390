"""Prove the ledger's invariants; exit non-zero with a report of each break."""

from __future__ import annotations

from itertools import groupby

from django.core.management.base import BaseCommand, CommandError

from accounts import selectors
from accounts.models import Balance, JournalEntry, Posting


class Command(BaseCommand):
    help = (
        "Verify the ledger: every entry sums to zero per asset, every asset sums to zero over "
        "all accounts, every balance equals its postings bucket by bucket, no bucket is "
        "negative. Exits 1 and lists each break when one fails."
    )

    def handle(self, *args: object, **options: object) -> None:
        breaks = selectors.ledger_verify()
        counts = (
            f"{JournalEntry.objects.count()} journal entries, {Posting.objects.count()} "
            f"postings, {Balance.objects.count()} balances"
        )
        if not breaks:
            self.stdout.write(self.style.SUCCESS(f"ledger OK: {counts} checked"))
            return
        self.stdout.write(self.style.ERROR(f"ledger BROKEN ({counts}):"))
        for invariant, group in groupby(breaks, key=lambda item: item.invariant):
            self.stdout.write(f"\n{invariant}:")
            for item in group:
                self.stdout.write(f"  - {item.detail}")
        raise CommandError(f"{len(breaks)} ledger invariant break(s); see the report above")
