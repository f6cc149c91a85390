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
