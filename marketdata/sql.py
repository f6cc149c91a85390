"""The raw SQL statements of the marketdata app, in one place (the reads are the ORM's).

- the book snapshot (`marketdata.selectors.book_snapshot`): its reads run in one transaction
  at REPEATABLE READ, so the levels and the book state's seq come from one snapshot.
"""

from __future__ import annotations

# The first statement of the snapshot's transaction (PostgreSQL takes it only before any query).
REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
