"""What the order services accept: numbers and choices as a client sends them, checked.

A refusal raises `OrderRejected` with a code naming the field (`missing_quantity`,
`invalid_side`…), so the API and the trading screen can show it next to that field.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal, overload

from django.db import models

from trading.exceptions import OrderRejected


@overload
def decimal_input(value: object, name: str, *, required: Literal[True]) -> Decimal: ...
@overload
def decimal_input(value: object, name: str, *, required: bool) -> Decimal | None: ...
def decimal_input(value: object, name: str, *, required: bool) -> Decimal | None:
    if value is None or value == "":
        if required:
            raise OrderRejected(f"{name} is required", code=f"missing_{name}")
        return None
    if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
        raise OrderRejected(
            f"{name} must be a decimal string, not {type(value).__name__}", code=f"invalid_{name}"
        )
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise OrderRejected(f"{name} {value!r} is not a number", code=f"invalid_{name}") from None
    if not number.is_finite() or number <= 0:
        raise OrderRejected(f"{name} must be a positive number", code=f"invalid_{name}")
    if number >= Decimal(10) ** 19:
        raise OrderRejected(f"{name} is too large", code=f"invalid_{name}")
    return number


# The values of each choices class (Django's `.values` builds a new list on every access).
_CHOICE_VALUES: dict[type, frozenset[str]] = {}


def choice_input(value: object, choices: type[models.TextChoices], name: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    values = _CHOICE_VALUES.get(choices)
    if values is None:
        values = _CHOICE_VALUES[choices] = frozenset(choices.values)
    if not isinstance(text, str) or text not in values:
        allowed = ", ".join(choices.values)
        raise OrderRejected(f"{name} must be one of {allowed}", code=f"invalid_{name}")
    return text
