"""The command format of the `orders` topic: its names and the data each carries.

The services that write commands (trading/services/, trading/reference.py) name them with
these constants, and the matcher decodes a record into a `Command` here. A record that is not
a command raises `EnvelopeError` (the matcher dead-letters it).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.models import Instrument
from trading.units import ZERO
from tredye import kafka
from tredye.kafka import EnvelopeError

PLACE = "order.place"
CANCEL = "order.cancel"
REPLACE = "order.replace"
# Ends the trading day of one book: every DAY order in it expires.
EXPIRE_DAY = "book.expire_day"
# New trading rules of one instrument, for the orders after it (trading/reference.py).
RULES_CHANGE = "instrument.rules"
# Asks the matcher for the digest of one book, in memory and in PostgreSQL, at the commit of
# the batch that holds it (trading/reconcile.py writes it; the answer is in BookState).
BOOK_DIGEST = "book.digest"

# Commands that name a book, not an order.
BOOK_COMMANDS = (EXPIRE_DAY, RULES_CHANGE, BOOK_DIGEST)


@dataclass(slots=True)
class Command:
    kind: str
    symbol: str
    order_id: int
    seq: int = 0
    quantity: Decimal | None = None
    price: Decimal | None = None
    extra_hold: Decimal = ZERO
    partition: int = 0
    offset: int = 0
    record: Any = None
    # The outbox row the command was sent from (its record's header): the key by which the
    # matcher applies a command at most once, whatever offset or topic it arrives on.
    outbox_id: int | None = None
    # An `instrument.rules` command's rules (trading/reference.py).
    rules: dict[str, Decimal | None] | None = None


def command_decode(raw: bytes | None) -> Command:
    """Parse one `orders` record; raise EnvelopeError when it is not a command."""
    envelope = kafka.decode(raw)
    data = envelope.data
    if envelope.type == EXPIRE_DAY:
        # Ends the trading day of one book: every DAY order in it expires.
        return Command(EXPIRE_DAY, envelope.key, 0)
    if envelope.type == RULES_CHANGE:
        return Command(RULES_CHANGE, envelope.key, 0, rules=rules_decode(data))
    if envelope.type == BOOK_DIGEST:
        return Command(BOOK_DIGEST, envelope.key, 0)
    order_id = data.get("order_id")
    if isinstance(order_id, bool) or not isinstance(order_id, int) or not 0 < order_id < 2**63:
        raise EnvelopeError("order_id missing or not a positive 64-bit integer")
    if envelope.type == PLACE:
        return Command(PLACE, envelope.key, order_id)
    if envelope.type not in (CANCEL, REPLACE):
        raise EnvelopeError(f"unknown command type {envelope.type!r}")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0:
        raise EnvelopeError("seq missing or not a positive integer")

    def number(name: str, required: bool) -> Decimal | None:
        return kafka.positive_decimal(data, name, required=required)

    if envelope.type == CANCEL:
        return Command(CANCEL, envelope.key, order_id, seq, number("quantity", False))
    extra = data.get("extra_hold", "0")
    try:
        extra_hold = Decimal(extra) if isinstance(extra, str) else None
    except ArithmeticError:
        extra_hold = None
    if extra_hold is None or not extra_hold.is_finite() or extra_hold < 0:
        raise EnvelopeError("extra_hold is not a decimal string >= 0")
    return Command(
        REPLACE,
        envelope.key,
        order_id,
        seq,
        number("quantity", True),
        number("price", True),
        extra_hold,
    )


def rules_decode(data: dict[str, Any]) -> dict[str, Decimal | None]:
    """The rules of an `instrument.rules` command; raise EnvelopeError if they are not rules."""
    rules = data.get("rules")
    if not isinstance(rules, dict):
        raise EnvelopeError("rules missing or not an object")
    decoded: dict[str, Decimal | None] = {}
    for name in Instrument.RULES:
        value = rules.get(name)
        if value is None and name == "max_quantity":
            decoded[name] = None
            continue
        try:
            number = Decimal(value) if isinstance(value, str) else None
        except ArithmeticError:
            number = None
        if number is None or not number.is_finite() or number < 0:
            raise EnvelopeError(f"rules.{name} missing or not a decimal string >= 0")
        decoded[name] = number
    if not decoded["tick_size"] or not decoded["lot_size"]:
        raise EnvelopeError("rules.tick_size and rules.lot_size must be positive")
    return decoded
