"""Load the demo market and users (idempotent)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from marketdata.demo import DEMO_TRADER, demo_fund, demo_load


class Command(BaseCommand):
    help = "Create the demo assets, instruments, price models and users when missing."

    def handle(self, *args: object, **options: object) -> None:
        created = demo_load(
            trader_password=settings.DEMO_TRADER_PASSWORD,
            admin_password=settings.DEMO_ADMIN_PASSWORD,
        )
        self.stdout.write(
            "demo data: " + ", ".join(f"{count} {kind} created" for kind, count in created.items())
        )
        self.stdout.write(f"demo funding: {demo_fund()} deposits made through the ledger")
        self.stdout.write(
            f"demo trader login: {DEMO_TRADER} / {settings.DEMO_TRADER_PASSWORD}   "
            f"admin login: admin / {settings.DEMO_ADMIN_PASSWORD}"
        )
