"""Run the market maker: quote every instrument around its reference price (marketdata/maker.py)."""

import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from accounts.models import Account
from accounts.services import account_open
from marketdata.maker import MakerConfig, MarketMaker, MarketMakerWorker
from tredye.workers import Backoff

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Quote MARKET_MAKER_LEVELS levels on each side of the reference price from the ticks "
        "topic, as the MARKET_MAKER_USERNAME account, through order_place/order_replace."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", help="the bot's user (default MARKET_MAKER_USERNAME)")
        parser.add_argument("--symbols", nargs="+", help="only these instruments")
        parser.add_argument(
            "--keep-quotes",
            action="store_true",
            help="leave the quotes in the book on stop (default: cancel them)",
        )

    def handle(
        self,
        *args: object,
        username: str | None,
        symbols: list[str] | None,
        keep_quotes: bool,
        **options: object,
    ) -> None:
        username = username or settings.MARKET_MAKER_USERNAME
        account = self._account(username)
        maker = MarketMaker(account=account, config=MakerConfig.from_settings(), symbols=symbols)
        worker = MarketMakerWorker(maker, cancel_on_stop=not keep_quotes)
        worker.install_signal_handlers()
        self.stdout.write(f"market maker: quoting as {username} (account #{maker.account.pk})")
        worker.run()

    def _account(self, username: str) -> Account:
        """The bot's account; waits with backoff while the database is unavailable (SIGTERM
        still stops it: the worker's handlers are not installed yet)."""
        backoff = Backoff()
        while True:
            try:
                user = get_user_model().objects.filter(username=username).first()
                if user is None:
                    raise CommandError(f"no user {username!r}: run manage.py seed_demo first")
                return account_open(user=user)
            except DatabaseError as error:
                delay = backoff.next_delay()
                logger.warning(
                    "market maker: database error at start (%s); retrying in %.1fs",
                    str(error).strip(),
                    delay,
                )
                close_old_connections()
                time.sleep(delay)
