"""Resume trading on a halted instrument."""

from trading.management.commands._status import StatusCommand
from trading.models import Instrument


class Command(StatusCommand):
    help = __doc__
    status = Instrument.Status.OPEN
