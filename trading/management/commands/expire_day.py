"""End the trading day now: the matcher expires every DAY order (of these instruments)."""

from django.core.management.base import BaseCommand

from trading.services import day_orders_expire


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("symbols", nargs="*", help="only these instruments (default: all)")

    def handle(self, *args: object, symbols: list[str], **options: object) -> None:
        chosen = day_orders_expire(symbols=symbols or None)
        self.stdout.write(f"DAY orders expire on {', '.join(chosen) or 'no instrument'}")
