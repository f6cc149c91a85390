"""Database helpers shared by the apps' hot paths."""

from __future__ import annotations

import weakref

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, transaction

_ONLY_WHEN_ASKED = 2**31 - 1
# Connections known to plan prepared statements once (see `prepared_cursor`).
_GENERIC_PLANS: weakref.WeakSet = weakref.WeakSet()


def prepared_cursor() -> psycopg.Cursor:
    """A cursor on Django's connection that binds server-side and prepares what it is asked to
    (`execute(..., prepare=True)`); the connection plans a prepared statement once
    (`plan_cache_mode = force_generic_plan`).

    The cursor is the connection's own, kept for its next call (do not close it; read a result
    before the next call). Making a cursor and looking the connection up through Django's
    proxy cost a tenth of `order_place`'s Python.

    Without that PostgreSQL keeps re-planning these statements for each call (their custom
    plans cost less than the generic one, so it never switches): planning was ~40% of a
    trader's backend CPU. Django's own queries bind client-side and are never prepared, so the
    setting does not reach them. A SET is undone by a rollback, so the connection is only
    marked once the transaction that ran it commits.
    """
    wrapper = connections[DEFAULT_DB_ALIAS]
    raw = wrapper.connection
    kept = wrapper.__dict__.get("_tredye_prepared_cursor")
    if kept is not None and kept[0] is raw and not raw.closed:
        return kept[1]
    wrapper.ensure_connection()
    raw = wrapper.connection
    if raw.prepare_threshold is None:
        # Django turns prepared statements off (prepare_threshold None), and psycopg then
        # ignores `prepare=True` too: every call was parsed and planned again. Only the calls
        # that ask (prepare=True) are prepared; Django's own cursors bind client-side and never
        # prepare.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    cursor = psycopg.Cursor(raw)
    if raw not in _GENERIC_PLANS:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        if wrapper.in_atomic_block:
            # Kept only once the SET is committed (a rollback undoes it).
            transaction.on_commit(lambda: _GENERIC_PLANS.add(raw))
            return cursor
        _GENERIC_PLANS.add(raw)
    wrapper.__dict__["_tredye_prepared_cursor"] = (raw, cursor)
    return cursor
