"""Writes for market data: publishing reference ticks and remembering where prices stand."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaError

from marketdata.feed import Quote
from marketdata.models import PriceModel
from trading.services import reference_prices_set
from tredye import kafka

logger = logging.getLogger(__name__)


def tick_record(quote: Quote, *, seq: int, ts: int | None = None) -> bytes:
    """Encode one reference tick in the envelope, as the `ticks` topic carries it."""
    return kafka.encode(type="tick", key=quote.symbol, seq=seq, data=quote.as_data(), ts=ts)


class TickPublisher:
    """Produce reference ticks to the `ticks` topic, keyed by symbol, `seq` +1 per key.

    Ticks are perishable: while the broker is away they are dropped (and counted), never
    queued without bound, and the feed goes on. After a produce error the producer is built
    again (at most once per `REBUILD_EVERY_S`; see `kafka.producer_discard`). A send is not
    awaited, so a delivery that fails later (seen: a broker that came back empty leaves an
    idempotent producer failing every batch for good, while `send` still accepts) is seen by
    its future's errback: the tick counts as dropped and the next publish builds a new producer.
    """

    REBUILD_EVERY_S = 1.0

    def __init__(self) -> None:
        self.topic = kafka.topic(kafka.TICKS)
        self.seq: dict[str, int] = defaultdict(int)
        self._handed = 0  # accepted by `send` (main thread)
        self._refused = 0  # refused by `send` (main thread)
        self._failed = 0  # accepted, then failed to deliver (the producer's I/O thread)
        # Set by a failed delivery's errback: the producer is built again before the next send.
        self._broken = False
        self.producer: KafkaProducer | None = None
        self.last_build = 0.0
        self._build()

    def _build(self) -> KafkaProducer:
        self.last_build = time.monotonic()
        kafka.ensure_topics([kafka.TICKS])
        self.producer = producer = kafka.producer(max_block_ms=1000)
        return producer

    def publish(self, quote: Quote, *, ts: int | None = None) -> bool:
        """Send one tick; return False when it was dropped because Kafka is unavailable."""
        self.seq[quote.symbol] += 1
        value = tick_record(quote, seq=self.seq[quote.symbol], ts=ts)
        if self._broken:
            self._broken = False
            self._drop_producer()
        try:
            producer = self.producer
            if producer is None:
                if time.monotonic() - self.last_build < self.REBUILD_EVERY_S:
                    raise KafkaConnectionError("producer being rebuilt")
                producer = self._build()
            future = producer.send(self.topic, key=quote.symbol.encode(), value=value)
        except KafkaError as error:
            self._drop_producer()
            self._refused += 1
            self._warn(error)
            return False
        self._handed += 1
        future.add_errback(self._delivery_failed)
        return True

    @property
    def sent(self) -> int:
        """Ticks handed to the producer and not known to have failed."""
        return self._handed - self._failed

    @property
    def dropped(self) -> int:
        """Ticks refused while the broker was away, or lost by a producer that failed."""
        return self._refused + self._failed

    def _delivery_failed(self, error: Exception) -> None:
        # Runs on the producer's I/O thread: only counts and flags; publish() rebuilds.
        self._failed += 1
        self._broken = True
        self._warn(error)

    def _warn(self, error: Exception) -> None:
        dropped = self.dropped
        if dropped == 1 or dropped % 100 == 0:
            logger.warning(
                "feed: Kafka unavailable (%s); %d ticks dropped so far",
                error.__class__.__name__,
                dropped,
            )

    def _drop_producer(self) -> None:
        kafka.producer_discard(self.producer, timeout_s=0)
        self.producer = None

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(timeout=5)
            self.producer.close(timeout=5)


@transaction.atomic(durable=True)
def price_models_save(*, prices: dict[str, tuple[Decimal, Decimal]]) -> None:
    """Remember each symbol's (last, session open) so a restarted feed carries on from there;
    the last price is the instrument's reference price for trading's band."""
    now = timezone.now()  # update() skips auto_now; the session's day is read from it
    for symbol, (last, session_open) in prices.items():
        PriceModel.objects.filter(instrument__symbol=symbol).update(
            last_price=last, session_open=session_open, updated_at=now
        )
    reference_prices_set(prices={symbol: last for symbol, (last, _) in prices.items()})


def price_model_saved(sender: type, instance: PriceModel, **kwargs: object) -> None:
    """A price model created or edited (seed data, the admin): its price is the reference."""
    price = instance.last_price or instance.initial_price
    reference_prices_set(prices={instance.instrument.symbol: price})
