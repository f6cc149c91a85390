"""Run the market maker: quote every instrument around its reference price (trading/maker.py)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import account_open
from trading.maker import MakerConfig, MarketMaker, MarketMakerWorker


class Command(BaseCommand):
    help = (
        "Quote MARKET_MAKER_LEVELS levels on each side of the reference price from the ticks "
        "topic, as the MARKET_MAKER_USERNAME account, through order_place/order_replace."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--username", help="the bot's user (default MARKET_MAKER_USERNAME)")
        parser.add_argument("--symbols", nargs="+", help="only these instruments")
        parser.add_argument(
            "--keep-quotes",
            action="store_true",
            help="leave the quotes in the book on stop (default: cancel them)",
        )

    def handle(self, *args: object, **options: object) -> None:
        username = options["username"] or settings.MARKET_MAKER_USERNAME
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}: run manage.py seed_demo first")
        maker = MarketMaker(
            account=account_open(user=user),
            config=MakerConfig.from_settings(),
            symbols=options["symbols"],  # type: ignore[arg-type]
        )
        worker = MarketMakerWorker(maker, cancel_on_stop=not options["keep_quotes"])
        worker.install_signal_handlers()
        self.stdout.write(f"market maker: quoting as {username} (account #{maker.account.pk})")
        worker.run()
