"""The marketdata tests' symbol cache and isolated stream (the factories are the root
conftest's)."""

import pytest

from marketdata import consumers


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
