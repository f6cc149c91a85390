"""Run the matcher: the single writer of the order books (see trading/matching/)."""

from django.core.management.base import BaseCommand

from trading.matching.worker import MatcherWorker


class Command(BaseCommand):
    help = "Consume the orders topic from the checkpoint, match, and commit each batch once."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--partitions",
            help="comma-separated partitions of the orders topic to own (default: all)",
        )
        parser.add_argument("--batch-size", type=int, help="most commands per transaction")

    def handle(self, *args: object, **options: object) -> None:
        partitions = options.get("partitions")
        worker = MatcherWorker(
            partitions=[int(p) for p in str(partitions).split(",")] if partitions else None,
            batch_size=options.get("batch_size"),  # type: ignore[arg-type]
        )
        worker.install_signal_handlers()
        worker.run()
