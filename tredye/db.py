"""Database helpers shared by the apps' hot paths."""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model
from django.db.models.base import ModelState

_ONLY_WHEN_ASKED = 2**31 - 1
# Connections known to plan prepared statements once (see `prepared_cursor`).
_GENERIC_PLANS: weakref.WeakSet = weakref.WeakSet()

# Planner settings a Django connection adds to its sessions (see `planner_settings_set`),
# by the connection (Django's, per thread): they outlive its database sessions, so a session
# opened again after a failure gets them too.
_PLANNER_SETTINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEPT = "_tredye_prepared_cursor"


class PreparedCursor:
    """A psycopg cursor whose errors are Django's (`wrap_database_errors`).

    So callers catch `django.db.DatabaseError` and its kinds as for any query (the matcher
    retries a database error with backoff; anything else it takes for a poison command), and
    Django learns that the connection failed and replaces it at the next
    `close_old_connections()`. The psycopg error is the `__cause__`.
    """

    __slots__ = ("_wrapper", "_cursor")

    def __init__(self, wrapper: Any, cursor: psycopg.Cursor) -> None:
        self._wrapper = wrapper
        self._cursor = cursor

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None) -> Any:
        with self._wrapper.wrap_database_errors:
            self._cursor.execute(query, params, prepare=prepare)
        return self

    def fetchone(self) -> Any:
        with self._wrapper.wrap_database_errors:
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        with self._wrapper.wrap_database_errors:
            return self._cursor.fetchall()


def prepared_cursor() -> PreparedCursor:
    """A cursor on Django's connection that binds server-side and prepares what it is asked to
    (`execute(..., prepare=True)`); the connection plans a prepared statement once
    (`plan_cache_mode = force_generic_plan`), under the planner settings given to it
    (`planner_settings_set`).

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
    kept = wrapper.__dict__.get(_KEPT)
    if kept is not None and kept[0] is raw and not raw.closed:
        return kept[1]
    if raw is not None and raw.closed and not wrapper.in_atomic_block:
        wrapper.close()  # broken (e.g. the server restarted): ensure_connection makes a new one
    wrapper.ensure_connection()
    raw = wrapper.connection
    if raw.prepare_threshold is None:
        # Django turns prepared statements off (prepare_threshold None), and psycopg then
        # ignores `prepare=True` too: every call was parsed and planned again. Only the calls
        # that ask (prepare=True) are prepared; Django's own cursors bind client-side and never
        # prepare.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    cursor = PreparedCursor(wrapper, psycopg.Cursor(raw))
    if raw not in _GENERIC_PLANS:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        for setting in _PLANNER_SETTINGS.get(wrapper, ()):
            cursor.execute(f"SET {setting}")
        if wrapper.in_atomic_block:
            # Kept only once the SET is committed (a rollback undoes it).
            transaction.on_commit(lambda: _GENERIC_PLANS.add(raw))
            return cursor
        _GENERIC_PLANS.add(raw)
    wrapper.__dict__[_KEPT] = (raw, cursor)
    return cursor


def planner_settings_set(settings: tuple[str, ...]) -> None:
    """Set the planner settings (e.g. "enable_seqscan = off") of this thread's default
    connection: `prepared_cursor` SETs them with `plan_cache_mode` on each database session the
    connection opens from now on, the current one included (at its next call). A setting
    already SET stays on its session until it ends: dropping it reaches new sessions only.

    A generic plan is made from the statistics of the moment it is first needed and kept by the
    session: on a new venue `trading_order` is empty, and for the matcher's key lookups a hash
    join over a sequential scan then looks cheapest — and stays, reading the whole growing
    table on every batch. The matcher, whose every statement finds its rows by key, forbids
    the plans that do not (its worker calls this on its connection). A SET reaches every
    statement of the session, Django's too.
    """
    wrapper = connections[DEFAULT_DB_ALIAS]
    if _PLANNER_SETTINGS.get(wrapper, ()) == tuple(settings):
        return
    _PLANNER_SETTINGS[wrapper] = tuple(settings)
    # The current session was set up without them: set it up again at the next call.
    raw = wrapper.connection
    if raw is not None:
        _GENERIC_PLANS.discard(raw)
    wrapper.__dict__.pop(_KEPT, None)


M = TypeVar("M", bound=Model)


def instance_from_values(
    model: type[M], values: dict[str, Any], *, related: dict[str, Model] | None = None
) -> M:
    """A model instance with these attribute values (attnames), as if loaded from the database.

    Django's `Model.__init__` sets each field through its descriptor and sends two signals; on
    the order path (thousands of instances a second) that was a fifth of the Python. This fills
    the instance's `__dict__` in one step. `values` must name every concrete field; `related`
    fills the cache of foreign keys already at hand (e.g. {"instrument": instrument}).
    """
    instance = model.__new__(model)
    instance.__dict__.update(values)
    state = ModelState()
    state.adding = False
    state.db = DEFAULT_DB_ALIAS
    if related:
        state.fields_cache = dict(related)
    instance._state = state
    return instance


def instances_fetch(model: type[M], sql: str, params: Any) -> list[M]:
    """Run a prepared query whose columns are the model's concrete fields, in order, and
    return the rows as instances (see `instance_from_values`)."""
    names = _attnames(model)
    rows = prepared_cursor().execute(sql, params, prepare=True).fetchall()
    return [instance_from_values(model, dict(zip(names, row, strict=True))) for row in rows]


def select_columns(model: type[Model], alias: str = "") -> str:
    """The concrete columns of `model`, in field order, for `instances_fetch`."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{f.column}"' for f in model._meta.concrete_fields)


_ATTNAMES: dict[type, tuple[str, ...]] = {}


def _attnames(model: type[Model]) -> tuple[str, ...]:
    names = _ATTNAMES.get(model)
    if names is None:
        names = _ATTNAMES[model] = tuple(f.attname for f in model._meta.concrete_fields)
    return names


# psycopg caches the conversion of a statement's `%(name)s` placeholders only for statements of
# at most this many bytes and parameters (psycopg 3.3's `_queries` limits; tredye/tests
# checks these against the pinned psycopg, the one place that reads its internals).
STATEMENT_CACHE_MAX_BYTES = 4096
STATEMENT_CACHE_MAX_PARAMS = 50


def compact(sql: str) -> str:
    """`sql` without its `--` comments and runs of whitespace.

    psycopg converts a query's `%(name)s` placeholders on every execution unless the text is at
    most 4096 bytes long (and has at most 50 parameters); then the conversion is cached. The
    commented statements of the order path are longer than that, and converting them again was
    half of `order_place`'s Python. Keep the comments in the source; send this.
    """
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return " ".join(" ".join(lines).split())
