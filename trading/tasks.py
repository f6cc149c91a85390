"""Celery tasks of the trading app: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task

from trading.services import day_orders_expire


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def expire_day_orders() -> int:
    """End the trading day: expire every DAY order (Celery beat, TRADING_DAY_END_UTC)."""
    return len(day_orders_expire())
