"""Show an instrument's trading rules, or change them for the orders placed from now on.

    manage.py instrument_rules AAPL
    manage.py instrument_rules AAPL --taker-fee-rate 0.0025 --max-quantity none

Changes go through `trading.reference.instrument_rules_change`: fee rates, size limits and the
price band apply to orders placed afterwards; the tick and lot size change only on a halted
instrument without open orders (halt it and cancel them first).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading.exceptions import TradingError
from trading.models import Instrument
from trading.reference import RULES, instrument_rules_change
from trading.units import plain


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol")
        for name in RULES:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                metavar="DECIMAL" if name != "max_quantity" else "DECIMAL|none",
            )
        parser.add_argument("--changed-by", default="manage.py", help="recorded with the change")

    def handle(self, *args: object, symbol: str, changed_by: str, **options: object) -> None:
        rules = {name: options[name] for name in RULES if options.get(name) is not None}
        # From the command line a rule is a string; "none" lifts the size limit.
        max_quantity = rules.get("max_quantity")
        if isinstance(max_quantity, str) and max_quantity.lower() == "none":
            rules["max_quantity"] = None
        before = Instrument.objects.filter(symbol=symbol.strip().upper()).first()
        try:
            if rules:
                instrument = instrument_rules_change(symbol=symbol, changed_by=changed_by, **rules)
            else:
                found = Instrument.objects.filter(symbol=symbol.strip().upper()).first()
                if found is None:
                    raise CommandError(f"unknown instrument {symbol!r}")
                instrument = found
        except TradingError as error:
            raise CommandError(f"{error.detail} ({error.code}); nothing changed") from None
        for name in RULES:
            value = getattr(instrument, name)
            shown = "none" if value is None else plain(value)
            marker = "  (changed)" if before and getattr(before, name) != value else ""
            self.stdout.write(f"{name:16s} {shown}{marker}")
