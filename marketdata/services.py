"""Writes for market data: publishing reference ticks and remembering where prices stand."""

from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal

from django.db import transaction
from kafka.errors import KafkaError

from marketdata.feed import Quote
from marketdata.models import PriceModel
from tredye import kafka

logger = logging.getLogger(__name__)


def tick_record(quote: Quote, *, seq: int, ts: int | None = None) -> bytes:
    """Encode one reference tick in the envelope, as the `ticks` topic carries it."""
    return kafka.encode(type="tick", key=quote.symbol, seq=seq, data=quote.as_data(), ts=ts)


class TickPublisher:
    """Produce reference ticks to the `ticks` topic, keyed by symbol, `seq` +1 per key.

    Ticks are perishable: while the broker is away they are dropped (and counted), never
    queued without bound, and the feed goes on.
    """

    def __init__(self) -> None:
        kafka.ensure_topics([kafka.TICKS])
        self.producer = kafka.producer(max_block_ms=1000)
        self.topic = kafka.topic(kafka.TICKS)
        self.seq: dict[str, int] = defaultdict(int)
        self.sent = 0
        self.dropped = 0

    def publish(self, quote: Quote, *, ts: int | None = None) -> bool:
        """Send one tick; return False when it was dropped because Kafka is unavailable."""
        self.seq[quote.symbol] += 1
        value = tick_record(quote, seq=self.seq[quote.symbol], ts=ts)
        try:
            self.producer.send(self.topic, key=quote.symbol.encode(), value=value)
        except KafkaError as error:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "feed: Kafka unavailable (%s); %d ticks dropped so far",
                    error.__class__.__name__,
                    self.dropped,
                )
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.producer.flush(timeout=5)
        self.producer.close(timeout=5)


@transaction.atomic(durable=True)
def price_models_save(*, prices: dict[str, tuple[Decimal, Decimal]]) -> None:
    """Remember each symbol's (last, session open) so a restarted feed carries on from there."""
    for symbol, (last, session_open) in prices.items():
        PriceModel.objects.filter(instrument__symbol=symbol).update(
            last_price=last, session_open=session_open
        )
