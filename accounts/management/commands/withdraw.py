"""Pay money or securities out of a trading account's available balance (operators)."""

from accounts import services
from accounts.management.commands._movement import MovementCommand


class Command(MovementCommand):
    help = "Withdraw an amount of an asset from a trading account's available balance."
    verb = "Withdrew"
    preposition = "from"
    service = staticmethod(services.withdraw)
