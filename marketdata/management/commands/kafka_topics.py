"""Create the prefixed Kafka topics that are missing (idempotent)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from tredye import kafka


class Command(BaseCommand):
    help = "Create every Tredye topic (with KAFKA_TOPIC_PREFIX) that does not exist yet."

    def handle(self, *args: object, **options: object) -> None:
        try:
            kafka.ensure_topics()
        except KafkaError as error:
            raise CommandError(
                f"Kafka at {','.join(settings.KAFKA_BOOTSTRAP_SERVERS)} is unavailable: {error}"
            ) from error
        names = ", ".join(kafka.topic(name) for name in kafka.ALL_TOPICS)
        self.stdout.write(f"kafka topics ready: {names}")
