"""The business calendar: trade dates and settlement dates (T+N business days).

Weekends never settle, nor do the dates of `Holiday` (admins keep the list). A trading day
ends at `TRADING_DAY_END_UTC` (when DAY orders expire): a trade after it belongs to the next
day. T+0 settles on the trade date itself, whatever day it is (crypto trades every day);
T+N on the Nth business day after it. A trade's settlement date is fixed when it is made.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from django.conf import settings

from trading.models import Holiday

# How long a process trusts the holiday list it read (the matcher reads it per batch).
HOLIDAYS_TTL_S = 60.0


def day_end() -> datetime.time:
    """The UTC time at which a trading day ends (settings.TRADING_DAY_END_UTC, "HH:MM")."""
    hours, minutes = settings.TRADING_DAY_END_UTC.split(":")
    return datetime.time(int(hours), int(minutes))


def trade_date(at: datetime.datetime, end: datetime.time | None = None) -> datetime.date:
    """The trading day a moment belongs to: a day ends at `end` (UTC), so with an end of
    21:00 a trade at 22:00 UTC on Monday is Tuesday's. With 00:00 it is the UTC date."""
    if at.tzinfo is None:
        raise ValueError("trade times are timezone-aware")
    end = day_end() if end is None else end
    utc = at.astimezone(datetime.UTC)
    shift = datetime.timedelta(hours=end.hour, minutes=end.minute)
    if shift:
        utc += datetime.timedelta(days=1) - shift
    return utc.date()


def is_business_day(day: datetime.date, holidays: frozenset[datetime.date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def business_days_after(
    day: datetime.date, days: int, holidays: frozenset[datetime.date]
) -> datetime.date:
    """The `days`-th business day after `day` (`day` itself for 0)."""
    if days < 0:
        raise ValueError("settlement days cannot be negative")
    while days:
        day += datetime.timedelta(days=1)
        if is_business_day(day, holidays):
            days -= 1
    return day


def holidays_read() -> frozenset[datetime.date]:
    return frozenset(Holiday.objects.values_list("date", flat=True))


@dataclass(slots=True)
class Calendar:
    """The holidays and the day's end, as one process last read them."""

    holidays: frozenset[datetime.date]
    end: datetime.time
    read_at: float = float("-inf")

    @classmethod
    def read(cls) -> Calendar:
        return cls(holidays_read(), day_end(), time.monotonic())

    def fresh(self) -> Calendar:
        """This calendar, or the database's if it is older than HOLIDAYS_TTL_S."""
        if time.monotonic() - self.read_at < HOLIDAYS_TTL_S:
            return self
        return Calendar.read()

    def settlement_date(self, executed_at: datetime.datetime, days: int) -> datetime.date:
        return business_days_after(trade_date(executed_at, self.end), days, self.holidays)


# --- a trading day's bounds (settlement and statements) ------------------------------------


def day_bounds(
    day: datetime.date, end: datetime.time | None = None
) -> tuple[datetime.datetime, datetime.datetime]:
    """The UTC moments [start, end) of trading day `day`: the moments `trade_date` puts on it.

    With an end of 21:00 Tuesday runs from Monday 21:00 to Tuesday 21:00; with 00:00 it is the
    UTC date.
    """
    end = day_end() if end is None else end
    if end.hour or end.minute:
        start = datetime.datetime.combine(day - datetime.timedelta(days=1), end, datetime.UTC)
    else:
        start = datetime.datetime.combine(day, datetime.time(0), datetime.UTC)
    return start, start + datetime.timedelta(days=1)


def today(now: datetime.datetime | None = None) -> datetime.date:
    """Today's trade date (the trading day now belongs to)."""
    return trade_date(now or datetime.datetime.now(datetime.UTC))
