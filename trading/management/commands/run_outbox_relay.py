"""Run the outbox relay: produce committed order commands (and orphaned matcher events)."""

from django.core.management.base import BaseCommand

from trading.relay import OutboxRelay


class Command(BaseCommand):
    help = (
        "Produce unsent outbox rows to Kafka: order commands always; the matcher's events when "
        "no matcher holds their lane (e.g. it died after a commit)."
    )

    def handle(self, *args: object, **options: object) -> None:
        relay = OutboxRelay()
        relay.install_signal_handlers()
        relay.run()
