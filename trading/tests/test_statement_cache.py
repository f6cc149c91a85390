"""The statements order_place runs on every call stay within what psycopg caches.

psycopg converts a query's named placeholders to PostgreSQL's on every execution unless the
text is short enough and has few enough parameters; then the conversion is cached. Converting
`sql.PLACEMENT_WRITE` again on each order cost as much Python as the rest of `order_place`.
"""

import re

import pytest

from trading import sql
from tredye.db import STATEMENT_CACHE_MAX_BYTES, STATEMENT_CACHE_MAX_PARAMS


@pytest.mark.parametrize("name", ["PLACEMENT_READ", "PLACEMENT_WRITE"])
def test_order_place_statements_are_cached_by_psycopg(name):
    text = getattr(sql, name)
    assert len(text.encode()) <= STATEMENT_CACHE_MAX_BYTES
    assert len(set(re.findall(r"%\((\w+)\)[sbt]", text))) <= STATEMENT_CACHE_MAX_PARAMS
