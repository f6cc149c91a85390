"""Dead-lettered records kept in PostgreSQL, where operators see them (the admin's "Dead
letters"), besides the dead-letter topic that the local broker may lose."""

from __future__ import annotations

from django.db import transaction

from trading.models import DeadLetter
from tredye.workers import DeadLetterRecord


def _text(raw: bytes | None) -> str:
    # A poison record need not be UTF-8, and PostgreSQL's text takes no NUL: keep every byte
    # readable rather than refuse the record.
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


@transaction.atomic  # a savepoint inside a caller's transaction: a refused row spoils nothing
def dead_letter_store(letter: DeadLetterRecord) -> DeadLetter:
    """Keep one dead-lettered record (the sink trading registers with the workers' base).
    Raises DatabaseError when PostgreSQL refuses it; the workers' base logs that and goes on."""
    return DeadLetter.objects.create(
        worker=letter.worker,
        topic=letter.topic,
        partition=letter.partition,
        offset=letter.offset,
        key=_text(letter.key),
        value=_text(letter.value),
        reason=letter.reason,
    )
