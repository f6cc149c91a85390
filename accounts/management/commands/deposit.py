"""Credit money or securities from outside to a trading account (operators)."""

from accounts import services
from accounts.management.commands._movement import MovementCommand


class Command(MovementCommand):
    help = "Deposit an amount of an asset into a trading account (through the ledger)."
    verb = "Deposited"
    preposition = "to"
    service = staticmethod(services.deposit)
