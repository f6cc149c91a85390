"""Reconcile the venue now (trading.reconcile): a progress bar per check on stderr, the report on
stdout, and exit status 1 when this run found breaks (2 when it could not run)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from django.core.management.base import BaseCommand, CommandParser

from trading.models import ReconciliationRun
from trading.reconcile import reconciliation_run

LABELS = {
    "ledger": "ledger invariants",
    "positions": "positions (fills folded)",
    "sequences": "sequences",
    "trades_topic": "trades topic",
    "books": "matcher's books",
}


class ProgressBar:
    """One bar per check on a terminal (redrawn at most 10 times a second); elsewhere one line
    when a check starts and one when it ends."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.check: str | None = None
        self.drawn = 0.0
        self.started = time.monotonic()

    def __call__(self, check: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if check != self.check:
            self.end()
            self.check, self.started, self.drawn = check, now, 0.0
            if not self.tty:
                self.stream.write(f"{LABELS.get(check, check)} …\n")
        finished = total is not None and done >= total
        if self.tty and (finished or now - self.drawn >= 0.1):
            self.drawn = now
            self.stream.write("\r" + self._line(done, total, now))
        self.stream.flush()

    def _line(self, done: int, total: int | None, now: float) -> str:
        label = f"{LABELS.get(self.check or '', self.check):26s}"
        elapsed = f"{now - self.started:6.1f} s"
        if not total:
            return f"{label} {'.' * (int(now * 4) % self.WIDTH):{self.WIDTH}s} {done:>9,} {elapsed}"
        share = min(done / total, 1.0)
        bar = "#" * int(share * self.WIDTH)
        return f"{label} [{bar:{self.WIDTH}s}] {done:>9,}/{total:<9,} {elapsed}"

    def end(self) -> None:
        if self.check is None:
            return
        elapsed = time.monotonic() - self.started
        if self.tty:
            self.stream.write("\n")
        else:
            self.stream.write(f"{LABELS.get(self.check, self.check)}: done in {elapsed:.1f} s\n")
        self.stream.flush()
        self.check = None


class Command(BaseCommand):
    help = (
        "Check the ledger, positions, sequences, the trades topic and the matcher's books; "
        "store each break found and print a report. Exit status 1 when breaks were found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-digest",
            action="store_true",
            help="do not ask the matcher for its books' digests (books are not checked)",
        )

    def handle(self, *args: object, no_digest: bool = False, **options: object) -> None:
        bar = ProgressBar(sys.stderr)
        try:
            run = reconciliation_run(trigger="command", progress=bar, digest=not no_digest)
        except Exception as error:  # noqa: BLE001 - reported, then a distinct exit status
            bar.end()
            self.stderr.write(f"reconciliation failed: {error}")
            sys.exit(2)
        bar.end()
        self.stdout.write(run.report)
        if run.status == ReconciliationRun.Status.BREAKS:
            sys.exit(1)
