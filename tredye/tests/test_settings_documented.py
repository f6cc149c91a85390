"""Every setting read from the environment is listed in .env.example and in the README."""

import re

import pytest

from testing.helpers import ROOT

SETTINGS_DIR = ROOT / "tredye" / "settings"
# Read by the test command itself, not by a running Tredye.
TEST_ONLY = {"TEST_DATABASE_NAME", "TEST_CONN_MAX_AGE"}


def environment_settings() -> set[str]:
    names = set()
    for path in SETTINGS_DIR.glob("*.py"):
        names |= set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    return names - TEST_ONLY


def test_the_settings_are_found():
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STREAM_FLUSH_INTERVAL_MS"} <= (
        environment_settings()
    )


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document):
    text = (ROOT / document).read_text()
    missing = {name for name in environment_settings() if name not in text}
    assert not missing, f"{document} does not mention: {', '.join(sorted(missing))}"
