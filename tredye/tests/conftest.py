"""The trading app's factories (funded traders, instruments) and its order path, for the
platform tests here."""

from trading.tests.conftest import asset, instrument, order_path, trader  # noqa: F401
