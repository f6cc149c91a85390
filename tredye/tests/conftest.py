"""The trading app's factories (funded traders, instruments) and its order path, for the
platform tests here."""

from trading.tests.conftest import (  # noqa: F401
    asset,
    instrument,
    order_path,
    queued_command,
    trader,
)
