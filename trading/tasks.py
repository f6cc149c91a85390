"""Celery tasks of the trading app: thin wrappers around services."""

from __future__ import annotations

import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError

from trading import business_days
from trading.reconcile import reconciliation_run
from trading.services import day_orders_expire
from trading.settlement import settlement_run
from trading.statements import statements_store


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def expire_day_orders() -> int:
    """End the trading day: expire every DAY order (Celery beat, TRADING_DAY_END_UTC)."""
    return len(day_orders_expire())


# --- settlement and daily statements (decision 0015) ---------------------------------------

# What a retry may cure: a lost connection, a deadlock or serialisation failure, a timeout.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


def _day(date_iso: str | None, default: datetime.date) -> datetime.date:
    if date_iso is None:
        return default
    try:
        return datetime.date.fromisoformat(date_iso)
    except (TypeError, ValueError):
        raise ValueError(f"a date is YYYY-MM-DD, not {date_iso!r}") from None


@shared_task(
    autoretry_for=TRANSIENT_DATABASE_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
)
def settle(date_iso: str | None = None) -> dict[str, object]:
    """Settle every trade side due on or before `date_iso` (default: today's trade date);
    Celery beat runs it every SETTLEMENT_INTERVAL_S, so T+0 trades settle the same day."""
    return settlement_run(date=_day(date_iso, business_days.today())).as_dict()


@shared_task(
    autoretry_for=TRANSIENT_DATABASE_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
)
def store_statements(date_iso: str | None = None) -> dict[str, object]:
    """Store the daily statements of trading day `date_iso` (default: the day that just
    ended); Celery beat runs it STATEMENTS_AFTER_DAY_END_MIN after TRADING_DAY_END_UTC."""
    yesterday = business_days.today() - datetime.timedelta(days=1)
    return statements_store(date=_day(date_iso, yesterday)).as_dict()


# --- reconciliation (decision 0016) ---------------------------------------------------------


@shared_task(
    autoretry_for=TRANSIENT_DATABASE_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=3,
)
def reconcile() -> int:
    """Reconcile the venue (Celery beat, every RECONCILE_INTERVAL_S); return the run's id."""
    return reconciliation_run(trigger="beat").pk
