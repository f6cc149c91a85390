from decimal import Decimal

import pytest

from accounts.models import Asset
from marketdata import consumers
from marketdata.models import PriceModel
from trading.models import Instrument
from trading.tests.conftest import (  # noqa: F401
    asset,
    instrument,
    order_path,
    queued_command,
    trader,
)


@pytest.fixture
def make_instrument(db):
    """Create an instrument (and its assets and price model) for the tests."""

    def make(
        symbol: str = "AAPL",
        *,
        price: str = "200.00",
        tick: str = "0.01",
        lot: str = "1",
        status: str = Instrument.Status.OPEN,
    ) -> Instrument:
        usd, _ = Asset.objects.get_or_create(
            code="USD", defaults={"name": "US dollar", "precision": 2}
        )
        base, _ = Asset.objects.get_or_create(
            code=symbol.split("-")[0], defaults={"name": symbol, "precision": 8}
        )
        listed = Instrument.objects.create(
            symbol=symbol,
            name=f"{symbol} test",
            base=base,
            quote=usd,
            tick_size=Decimal(tick),
            lot_size=Decimal(lot),
            status=status,
        )
        PriceModel.objects.create(
            instrument=listed,
            initial_price=Decimal(price),
            annual_volatility=Decimal("0.30"),
            spread_bps=4,
            typical_size=Decimal("100") * Decimal(lot),
        )
        return listed

    return make


@pytest.fixture(autouse=True)
def fresh_symbol_cache():
    """Each test sees the instruments it created, not a previous test's cached set."""
    consumers.forget_symbols()
    yield
    consumers.forget_symbols()


@pytest.fixture
def isolated_stream(settings):
    """Topics, Redis keys and channel-layer groups of this test's own, so the session's
    stream worker and other tests' messages never reach it."""
    import uuid

    prefix = f"iso{uuid.uuid4().hex[:10]}"
    settings.KAFKA_TOPIC_PREFIX = f"{prefix}."
    layers = {
        name: {**layer, "CONFIG": {**layer["CONFIG"], "prefix": prefix}}
        for name, layer in settings.CHANNEL_LAYERS.items()
    }
    settings.CHANNEL_LAYERS = layers  # Channels rebuilds its layers when this setting changes
    return settings
