"""Settle the trades due on a date (trading.settlement.settlement_run), showing progress."""

import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading import business_days
from trading.settlement import SettlementError, SettlementProgress, settlement_run


class Command(BaseCommand):
    help = (
        "Move what trades due on or before a date credited to `pending` into `available`: one "
        "journal entry per account, through the clearing account. Running it again changes "
        "nothing; a run stopped halfway resumes where it stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--date", help="the settlement date, YYYY-MM-DD (default: today's trade date)"
        )

    def handle(self, *args: object, date: str | None = None, **_: object) -> None:
        day = business_days.today()
        if date is not None:
            try:
                day = datetime.date.fromisoformat(date)
            except ValueError:
                raise CommandError(
                    f"--date takes a date such as 2026-11-27 (YYYY-MM-DD), not {date!r}"
                ) from None
        self._shown = -1
        self.stdout.write(f"settling trades due on or before {day.isoformat()}")
        try:
            summary = settlement_run(date=day, progress=self._progress)
        except SettlementError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{summary.date.isoformat()}: {summary.accounts} account(s) settled, "
            f"{summary.settlements} settlement(s), {summary.trades} trade side(s)"
        )

    def _progress(self, step: SettlementProgress) -> None:
        # One line per tenth of the run (and each of the first ten accounts): readable in a
        # log, never one line per account of a large run.
        tenth = step.done * 10 // step.total
        if step.done <= 10 or tenth != self._shown or step.done == step.total:
            self._shown = tenth
            self.stdout.write(
                f"  {step.done}/{step.total} accounts ({step.done * 100 // step.total}%): "
                f"account #{step.account_id} "
                + (f"{step.settlements} settlement(s)" if step.settlements else "nothing left")
            )
