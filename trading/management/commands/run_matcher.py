"""Run the matcher: the single writer of the order books (see trading/matching/)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading.matching.worker import MatcherWorker


class Command(BaseCommand):
    help = "Consume the orders topic from the checkpoint, match, and commit each batch once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--partitions",
            help="comma-separated partitions of the orders topic to own (default: all)",
        )
        parser.add_argument("--batch-size", type=int, help="most commands per transaction")

    def handle(
        self,
        *args: object,
        partitions: str | None = None,
        batch_size: int | None = None,
        **_: object,
    ) -> None:
        try:
            owned = [int(p) for p in partitions.split(",")] if partitions else None
        except ValueError:
            raise CommandError(
                f"--partitions takes numbers separated by commas, not {partitions!r}"
            ) from None
        if owned is not None and any(p < 0 for p in owned):
            raise CommandError("--partitions takes partition numbers (0 or more)")
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        worker = MatcherWorker(partitions=owned, batch_size=batch_size)
        worker.install_signal_handlers()
        worker.run()
