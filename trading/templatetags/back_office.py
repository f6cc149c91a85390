"""What the admin's index shows of the back office: open reconciliation breaks (the badge)."""

from __future__ import annotations

from django import template

from trading.models import ReconciliationBreak

register = template.Library()


@register.simple_tag
def open_breaks_count() -> int:
    """How many reconciliation breaks are open (the break_open partial index: few rows)."""
    return ReconciliationBreak.objects.filter(resolved_at__isnull=True).count()
