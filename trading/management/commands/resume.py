"""Resume trading on a halted instrument."""

from django.core.management.base import BaseCommand, CommandError

from trading.exceptions import TradingError
from trading.models import Instrument
from trading.services import instrument_status_set


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("symbol")

    def handle(self, *args: object, symbol: str, **options: object) -> None:
        try:
            instrument = instrument_status_set(symbol=symbol, status=Instrument.Status.OPEN)
        except TradingError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(f"{instrument.symbol} is now {instrument.status}")
