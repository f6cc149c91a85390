"""Celery tasks of the trading app: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from trading.services import day_orders_expire


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def expire_day_orders() -> int:
    """End the trading day: expire every DAY order (Celery beat, TRADING_DAY_END_UTC)."""
    return len(day_orders_expire())


# --- reconciliation (decision 0016) ---------------------------------------------------------


@shared_task(
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=3,
)
def reconcile() -> int:
    """Reconcile the venue (Celery beat, every RECONCILE_INTERVAL_S); return the run's id."""
    from trading.reconcile import reconciliation_run

    return reconciliation_run(trigger="beat").pk
