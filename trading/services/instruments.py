"""Instrument services: trading status and the reference price the band is centred on."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from trading.exceptions import TradingError, UnknownInstrument
from trading.models import Instrument


def instrument_get(symbol: object) -> Instrument:
    """The instrument with this symbol (any case, spaces around it ignored), with its assets;
    raises UnknownInstrument."""
    if not isinstance(symbol, str) or not symbol:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    instrument = (
        Instrument.objects.select_related("base", "quote", "book_state", "price_model")
        .filter(symbol=symbol.strip().upper())
        .first()
    )
    if instrument is None:
        raise UnknownInstrument(f"unknown instrument {symbol!r}")
    return instrument


def reference_prices_set(*, prices: dict[str, Decimal]) -> int:
    """Set instruments' reference prices (the reference feed calls this as it saves its prices;
    in the caller's transaction). Returns how many instruments it set; unknown symbols and
    prices that are not positive are skipped."""
    now = timezone.now()
    done = 0
    for symbol, price in prices.items():
        if price is None or not price > 0:
            continue
        done += Instrument.objects.filter(symbol=symbol).update(
            reference_price=price, reference_price_at=now
        )
    return done


@transaction.atomic(durable=True)
def instrument_status_set(*, symbol: str, status: str) -> Instrument:
    """Halt, resume or close an instrument. Raises UnknownInstrument or TradingError."""
    if status not in Instrument.Status.values:
        raise TradingError(f"unknown status {status!r}", code="invalid_status")
    instrument = instrument_get(symbol)
    Instrument.objects.filter(pk=instrument.pk).update(status=status)
    instrument.status = status
    return instrument
