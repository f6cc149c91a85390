"""The shared body of `halt` and `resume`: set one instrument's status through the service."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading.exceptions import TradingError
from trading.services import instrument_status_set


class StatusCommand(BaseCommand):
    status: str

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol")

    def handle(self, *args: object, symbol: str, **options: object) -> None:
        try:
            instrument = instrument_status_set(symbol=symbol, status=self.status)
        except TradingError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(f"{instrument.symbol} is now {instrument.status}")
