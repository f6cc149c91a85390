"""Rebuild every book, order, trade, position and balance from the recorded commands through
the matcher's engine code and print how PostgreSQL differs from it (trading.replay)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading.replay import AUTO, SOURCES, ReplayError, replay_run


class Command(BaseCommand):
    help = (
        "Replay the recorded order commands through the matching engine, in memory, and compare "
        "the books, orders, trades, positions and balances they imply with PostgreSQL's. "
        "Exits 1 when they differ."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source",
            choices=SOURCES,
            default=AUTO,
            help="where the commands come from: the orders topic, PostgreSQL's record of them, "
            "or the topic when it still holds every applied command (default)",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=20,
            help="differences shown per table (default 20; every one is counted)",
        )

    def handle(self, *args: object, source: str, limit: int, **_: object) -> None:
        if limit < 0:
            raise CommandError(f"--limit must be 0 or more, not {limit}")
        try:
            report = replay_run(source=source, progress=self._progress)
        except ReplayError as error:
            raise CommandError(str(error)) from None
        for line in report.lines(limit=limit):
            self.stdout.write(line)
        if not report.is_clean:
            raise CommandError(
                f"{report.differences:,} difference(s) between PostgreSQL and the replay",
                returncode=1,
            )

    def _progress(self, line: str) -> None:
        self.stderr.write(f"  {line}")
