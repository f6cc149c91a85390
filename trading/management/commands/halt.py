"""Halt an instrument: new orders are rejected, cancels still work."""

from trading.management.commands._status import StatusCommand
from trading.models import Instrument


class Command(StatusCommand):
    help = __doc__
    status = Instrument.Status.HALTED
