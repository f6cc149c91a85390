"""tredye.db's statement-cache limits are psycopg's: the one place that reads its internals, so
an upgrade of psycopg that changes them fails here, not silently in the order path's speed."""

from psycopg import _queries

from tredye.db import STATEMENT_CACHE_MAX_BYTES, STATEMENT_CACHE_MAX_PARAMS


def test_the_statement_cache_limits_are_psycopgs():
    assert STATEMENT_CACHE_MAX_BYTES == _queries.MAX_CACHED_STATEMENT_LENGTH
    assert STATEMENT_CACHE_MAX_PARAMS == _queries.MAX_CACHED_STATEMENT_PARAMS
