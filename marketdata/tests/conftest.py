"""The marketdata tests' symbol cache and isolated stream (the factories are the root
conftest's)."""

import pytest

from marketdata import consumers
from testing.stream_client import Stack


@pytest.fixture(autouse=True)
def fresh_symbol_cache():
    """Each test sees the instruments it created, not a previous test's cached set."""
    consumers.forget_symbols()
    yield
    consumers.forget_symbols()


@pytest.fixture
def isolated_stream(settings):
    """Topics and Redis keys (the stream's flushes, snapshots, status) of this test's own, so
    the session's stream worker and other tests' messages never reach it."""
    import uuid

    settings.KAFKA_TOPIC_PREFIX = f"iso{uuid.uuid4().hex[:10]}."
    return settings


@pytest.fixture
def market(make_instrument, make_account, make_asset):
    """An instrument priced near 100.00 and two traders funded on both sides of it."""
    instrument = make_instrument(price="100.00")
    usd = make_asset("USD")
    base = instrument.base
    funds = {usd: "10000000", base: "100000"}
    return instrument, make_account(funds=funds), make_account(funds=funds)


@pytest.fixture
def stack(order_path: str, start_test_process, market) -> Stack:
    """The order path, the stream worker and daphne, on this test's own topics."""
    return Stack(start_test_process, order_path)
