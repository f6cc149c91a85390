"""tredye.db's statement-cache limits are psycopg's: the one place that reads its internals, so
an upgrade of psycopg that changes them fails here, not silently in the order path's speed.
And the planner settings a process gives its own connection (the matcher's) stay on it."""

import threading

import pytest
from django.db import connections
from psycopg import _queries

from tredye import db
from tredye.db import STATEMENT_CACHE_MAX_BYTES, STATEMENT_CACHE_MAX_PARAMS


def test_the_statement_cache_limits_are_psycopgs():
    assert STATEMENT_CACHE_MAX_BYTES == _queries.MAX_CACHED_STATEMENT_LENGTH
    assert STATEMENT_CACHE_MAX_PARAMS == _queries.MAX_CACHED_STATEMENT_PARAMS


@pytest.mark.django_db
def test_planner_settings_reach_the_sessions_of_the_connection_they_are_set_on_only():
    seen = []

    def elsewhere() -> None:  # another thread: another Django connection
        try:
            seen.append(db.prepared_cursor().execute("SHOW enable_seqscan").fetchone())
        finally:
            connections.close_all()

    cursor = db.prepared_cursor()  # a session set up before the settings
    try:
        db.planner_settings_set(("enable_seqscan = off", "enable_hashjoin = off"))
        cursor = db.prepared_cursor()
        assert cursor.execute("SHOW enable_seqscan").fetchone() == ("off",)
        assert cursor.execute("SHOW enable_hashjoin").fetchone() == ("off",)
        assert cursor.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert seen == [("on",)]
    finally:
        db.planner_settings_set(())
