"""Show ledger amounts at their asset's precision, grouped by thousands, never via float."""

from __future__ import annotations

from decimal import Decimal

from django import template

from accounts.models import Asset

register = template.Library()


@register.filter
def amount(value: Decimal | None, asset: Asset) -> str:
    """`1234.5|amount:usd` → `1,234.50`."""
    return f"{(value or Decimal(0)):,.{asset.precision}f}"


@register.filter
def signed_amount(value: Decimal, asset: Asset) -> str:
    """Like `amount`, with an explicit + for money coming in."""
    shown = amount(value, asset)
    return f"+{shown}" if value > 0 else shown.replace("-", "−")
