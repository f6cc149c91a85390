"""Run the stream worker: Kafka ticks -> conflation -> channel layer, every 16 ms."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.stream import StreamWorker


class Command(BaseCommand):
    help = "Consume ticks from Kafka, conflate per symbol and flush to WebSocket groups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--flush-interval-ms",
            type=int,
            default=settings.STREAM_FLUSH_INTERVAL_MS,
            help="Flush conflated updates this often (default %(default)s).",
        )

    def handle(self, *args: object, **options: object) -> None:
        interval = options["flush_interval_ms"]
        if not isinstance(interval, int) or interval < 1:
            raise CommandError("--flush-interval-ms must be a positive integer")
        worker = StreamWorker(
            flush_interval_ms=interval, stale_after_s=settings.STREAM_STALE_AFTER_S
        )
        worker.install_signal_handlers()
        self.stdout.write(f"stream: flushing every {interval} ms")
        worker.run()
