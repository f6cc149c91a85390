"""Admin lists over tables of millions of rows (orders, trades, positions).

Two things make Django's change list slow on such a table, and both are replaced here:

- It counts every row (`paginator.count`, and `show_full_result_count`). `LookaheadPaginator`
  counts only the rows of the shown page and a few pages after it, through the same index walk
  as the page itself; an unfiltered list says "about N" from the planner's estimate of the
  table (`trading.sql.TABLE_ROWS_ESTIMATE`), a filtered one "at least N" when there is more.
- Its search is `icontains` over joins, which no index serves. Here a search names what it
  looks for (`id:`, `account:`, `user:`, `client:`, `symbol:`) or is recognised by its form,
  and each becomes an equality some index answers (see each admin's `search_lookups`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from accounts.admin import ReadOnlyAdminMixin
from accounts.selectors import account_get
from trading import sql
from trading.models import Instrument

# How many pages past the shown one a list counts before it says "at least".
LOOKAHEAD_PAGES = 5
BIGINT_MAX = 2**63 - 1
SEARCH_KINDS = ("id", "account", "user", "client", "symbol")
_PREFIXED = re.compile(rf"^({'|'.join(SEARCH_KINDS)}):\s*(.+)$", re.IGNORECASE)
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def table_rows_estimate(model: type[Model]) -> int | None:
    """The planner's estimate of a table's rows (None before its first ANALYZE)."""
    with connection.cursor() as cursor:
        cursor.execute(sql.TABLE_ROWS_ESTIMATE, {"table": model._meta.db_table})
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


class LookaheadPaginator(Paginator):
    """A paginator that never counts the whole table: see the module's docstring.

    `count` is exact when the list ends within the look-ahead; otherwise it is the planner's
    estimate of an unfiltered table, or the rows seen so far, and `count_label` says which.
    """

    def __init__(self, object_list: QuerySet, per_page: int, *, page_number: int) -> None:
        super().__init__(object_list, per_page)
        self.page_number = max(1, page_number)
        self.count_kind = "exact"  # or "about" (the table's estimate), "at least"

    @cached_property
    def count(self) -> int:
        queryset: QuerySet = self.object_list  # type: ignore[assignment]
        offset = (self.page_number - 1) * self.per_page
        window = LOOKAHEAD_PAGES * self.per_page + 1
        # COUNT(*) over the page's own ORDER BY ... LIMIT/OFFSET: the same bounded index walk.
        counted = offset + queryset[offset : offset + window].count()
        if counted < offset + window:
            return counted
        estimate = None if queryset.query.where else table_rows_estimate(queryset.model)
        if estimate is not None and estimate > counted:
            self.count_kind = "about"
            return estimate
        self.count_kind = "at least"
        return counted

    @property
    def count_label(self) -> str:
        """The count as a person should read it: "12", "about 1,200,000", "at least 501"."""
        number = f"{self.count:,}"
        return number if self.count_kind == "exact" else f"{self.count_kind} {number}"


@dataclass(frozen=True, slots=True)
class SearchTerm:
    """What a search asks for: `kind` is one of SEARCH_KINDS, or None to infer it."""

    kind: str | None
    text: str

    @classmethod
    def parse(cls, raw: str) -> SearchTerm:
        text = raw.strip()
        prefixed = _PREFIXED.match(text)
        if prefixed:
            return cls(prefixed.group(1).lower(), prefixed.group(2).strip())
        return cls(None, text)

    @property
    def number(self) -> int | None:
        """The term as a row id, if it is one (a bigint)."""
        if self.text.isascii() and self.text.isdigit() and int(self.text) <= BIGINT_MAX:
            return int(self.text)
        return None

    def account_ids(self) -> list[int]:
        """The account the term names: by id (`account:12`) or by its owner (`user:alice`, or a
        bare name)."""
        if self.kind == "account":
            return [] if self.number is None else [self.number]
        account = account_get(username=self.text[:150])
        return [] if account is None else [account.pk]

    def instrument(self) -> Instrument | None:
        if not _SYMBOL.match(self.text) or len(self.text) > 32:
            return None
        return Instrument.objects.filter(symbol=self.text.upper()).first()


# A model's searches: for a term and its kind, the condition (None: the kind does not apply).
SearchLookups = Callable[[SearchTerm, str], Q | None]


class BigTableAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only, never counting the table, never sorting it by an unindexed column, and
    searching by equalities (`search_lookups`) instead of `icontains`."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would count the whole table
    sortable_by = ()  # the model's ordering only: the primary key's index
    list_per_page = 50
    # Only so that the change list shows its search box: `get_search_results` decides.
    search_fields = ("id",)
    search_help_text = (
        "One of: an id, a client order id, a symbol, a username; or say which with "
        "id:, account:, user:, client:, symbol: (exact matches only)."
    )

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet, per_page: int, *args: Any, **kwargs: Any
    ) -> LookaheadPaginator:
        raw = request.GET.get("p", "1")
        page_number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 1
        return LookaheadPaginator(queryset, per_page, page_number=page_number)

    def search_lookups(self, term: SearchTerm) -> Q | None:
        """The condition a term means on this model; None when it can match nothing."""
        raise NotImplementedError

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False
        condition = self.search_lookups(SearchTerm.parse(search_term))
        if condition is None:
            return queryset.none(), False
        return queryset.filter(condition), False
