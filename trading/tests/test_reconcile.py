"""Reconciliation on the real stack: a clean venue has no break; each invariant broken on
purpose, one at a time, straight in the database or on the topic, is found as its kind."""

from __future__ import annotations

import logging
import subprocess
import uuid
from decimal import Decimal

import pytest
from django.db.models import F
from django.test import Client, override_settings

from accounts import services as ledger
from accounts.models import Balance
from testing.helpers import ROOT, manage, new_key, place, settled, wait_for
from trading.exceptions import BreakNotResolvable
from trading.messages import TRADE
from trading.models import (
    BookState,
    Order,
    Outbox,
    Position,
    ReconciliationBreak,
    ReconciliationRun,
    Trade,
)
from trading.outbox import Relay
from trading.reconcile import KINDS, break_resolve, reconciliation_run
from tredye import kafka

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def venue(order_path, make_instrument, make_account):
    """Two filled trades between alice (seller) and bob (buyer), and a sell order of alice
    resting in the book, all applied by the running matcher and sent by the relay."""
    market = make_instrument()
    alice = make_account(funds={market.base: "20", market.quote: "1000"})
    bob = make_account(funds={market.quote: "5000"})
    settled(place(alice, market, "sell", "3", price="100.00"))
    settled(place(bob, market, "buy", "2", price="100.00"))
    settled(place(bob, market, "buy", "1", price="100.00"))
    resting = settled(place(alice, market, "sell", "5", price="101.00"))
    wait_for(
        lambda: (
            not Outbox.objects.filter(topic=kafka.TRADES, sent_at__isnull=True).exists()
            and Trade.objects.filter(instrument=market).count() == 2
        ),
        what="both trades sent to the topic",
    )
    return market, alice, bob, resting


def open_breaks() -> dict[str, list[ReconciliationBreak]]:
    found: dict[str, list[ReconciliationBreak]] = {}
    for row in ReconciliationBreak.objects.filter(resolved_at__isnull=True).order_by("pk"):
        found.setdefault(row.kind, []).append(row)
    return found


def kinds_of(run: ReconciliationRun) -> set[str]:
    """The kinds of the breaks this run found (new ones, and open ones it found again)."""
    return set(run.breaks.values_list("kind", flat=True))


def test_a_clean_venue_has_no_break_then_each_ledger_break_is_found_alone(venue, caplog):
    market, alice, bob, _resting = venue
    admin = alice.user  # any user: who resolved it

    # given a venue after real trades, when reconciled with the matcher's digests
    clean = reconciliation_run(trigger="test")

    # then nothing is broken, and every book was compared
    assert clean.status == ReconciliationRun.Status.CLEAN, clean.report
    assert clean.checked["books"]["answered"] == clean.checked["books"]["asked"] >= 1
    assert clean.checked["trades_topic"]["records_on_topic"] == 2
    assert clean.checked["positions"] == {"fills": 4, "positions": 2}
    assert "No breaks found." in clean.report

    # a balance off by 0.01
    usd = market.quote
    before = Balance.objects.get(account=bob, asset=usd).available
    Balance.objects.filter(account=bob, asset=usd).update(available=F("available") + D("0.01"))
    with caplog.at_level(logging.ERROR, logger="trading.reconcile"):
        run = reconciliation_run(trigger="test", digest=False)
    assert run.status == ReconciliationRun.Status.BREAKS
    assert kinds_of(run) == {"balance_mismatch", "asset_sum_mismatch"}
    balance = open_breaks()["balance_mismatch"][0]
    assert balance.subject == f"account #{bob.pk} USD"
    assert balance.involved == {"account": bob.pk, "asset": "USD"}
    assert f"is {before + D('0.01'):.2f}/0.00/0.00 but its postings sum to {before:.2f}/" in (
        balance.detail
    )
    assert any(
        r.levelno == logging.ERROR and "balance_mismatch" in r.getMessage() for r in caplog.records
    )
    # found again: the same row, seen later, by the later run
    again = reconciliation_run(trigger="test", digest=False)
    seen = ReconciliationBreak.objects.get(pk=balance.pk)
    assert seen.run_id == again.pk
    assert seen.last_seen_at > balance.last_seen_at
    assert seen.found_at == balance.found_at
    # repaired: not found any more, yet it stays open until an operator resolves it
    Balance.objects.filter(account=bob, asset=usd).update(available=F("available") - D("0.01"))
    repaired = reconciliation_run(trigger="test", digest=False)
    assert repaired.status == ReconciliationRun.Status.CLEAN, repaired.report
    assert ReconciliationBreak.objects.get(pk=balance.pk).resolved_at is None
    assert "still open" in repaired.report
    for row in ReconciliationBreak.objects.filter(resolved_at__isnull=True):
        break_resolve(break_id=row.pk, user=admin, note="test: put back by hand")

    # a held amount with no order (a balanced ledger hold that no order accounts for)
    ledger.hold(
        account=bob, asset=usd, amount=D("5"), reference="no order", idempotency_key=new_key()
    )
    run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"held_mismatch"}, run.report
    held = open_breaks()["held_mismatch"][0]
    assert held.subject == f"account #{bob.pk} USD"
    ledger.release(
        account=bob, asset=usd, amount=D("5"), reference="no order", idempotency_key=new_key()
    )
    break_resolve(break_id=held.pk, user=admin, note="test: released")

    # a position off by one lot
    Position.objects.filter(account=bob, instrument=market).update(quantity=F("quantity") + 1)
    run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"position_mismatch"}, run.report
    position = open_breaks()["position_mismatch"][0]
    assert position.subject == f"account #{bob.pk} {market.symbol}"
    assert "[position_equals_fills]" in position.detail
    assert "[fills folded]" in position.detail
    Position.objects.filter(account=bob, instrument=market).update(quantity=F("quantity") - 1)

    # its cost alone off: only the fold of the fills sees it
    Position.objects.filter(account=bob, instrument=market).update(
        average_cost=F("average_cost") + D("0.5")
    )
    run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"position_mismatch"}, run.report
    assert "average cost 100.5, its fills give 100" in run.report


def test_a_book_that_differs_from_its_orders_and_a_gap_in_trade_numbers(venue):
    market, _alice, _bob, resting = venue

    # an open order's quantity changed under the running matcher
    Order.objects.filter(pk=resting.pk).update(quantity=F("quantity") + 1)
    run = reconciliation_run(trigger="test")
    assert kinds_of(run) == {"book_mismatch"}, run.report
    book = open_breaks()["book_mismatch"][0]
    assert book.subject == market.symbol
    state = BookState.objects.get(instrument=market)
    assert state.memory_digest != state.rows_digest
    assert state.digest_orders == 1
    Order.objects.filter(pk=resting.pk).update(quantity=F("quantity") - 1)
    assert reconciliation_run(trigger="test").status == ReconciliationRun.Status.CLEAN

    # trade 2 renumbered 102: a hole at 2, a trade past the book's counter, and the topic
    # and PostgreSQL no longer agree on either number
    Trade.objects.filter(instrument=market, seq=2).update(seq=102)
    run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"trade_sequence_gap", "trade_not_on_topic", "trade_not_in_database"}
    subjects = {(row.kind, row.subject) for row in run.breaks.all()}
    assert ("trade_sequence_gap", f"{market.symbol} trades 2") in subjects
    assert ("trade_sequence_gap", f"{market.symbol} trades 102") in subjects
    assert ("trade_not_on_topic", f"{market.symbol} trades 102") in subjects
    assert ("trade_not_in_database", f"{market.symbol} trades 2") in subjects


def test_the_trades_topic_against_postgresql_both_ways(venue, settings):
    market, *_ = venue
    last = BookState.objects.get(instrument=market).trade_seq

    # a trade on the topic that PostgreSQL does not have
    producer = kafka.producer()
    producer.send(
        kafka.topic(kafka.TRADES),
        key=market.symbol.encode(),
        value=kafka.encode(type=TRADE, key=market.symbol, seq=last + 40, data={}),
    )
    producer.flush(10)
    producer.close()
    run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"trade_not_in_database"}, run.report
    assert (
        open_breaks()["trade_not_in_database"][0].subject == f"{market.symbol} trades {last + 40}"
    )

    # a trade missing from the topic: a topic of this test's own, written by the relay's own
    # code from the outbox rows, less one
    private = f"{settings.KAFKA_TOPIC_PREFIX}mine{uuid.uuid4().hex[:6]}."
    with override_settings(KAFKA_TOPIC_PREFIX=private):
        kafka.ensure_topics([kafka.TRADES])
        relay = Relay(topics=[kafka.TRADES])
        relay.recover([kafka.TRADES])
        rows = list(Outbox.objects.filter(topic=kafka.TRADES, key=market.symbol).order_by("pk"))
        dropped = rows[0]
        relay.send([row for row in rows if row.pk != dropped.pk])
        relay.close()
        run = reconciliation_run(trigger="test", digest=False)
    assert kinds_of(run) == {"trade_not_on_topic"}, run.report
    missing = open_breaks()["trade_not_on_topic"][0]
    assert missing.subject == f"{market.symbol} trades {dropped.seq}"
    assert missing.involved == {"instrument": market.symbol, "seq": [dropped.seq, dropped.seq]}

    # a broker that lost the history (a new, empty topic): said so, not a break
    empty = f"{settings.KAFKA_TOPIC_PREFIX}empty{uuid.uuid4().hex[:6]}."
    with override_settings(KAFKA_TOPIC_PREFIX=empty):
        kafka.ensure_topics([kafka.TRADES])
        run = reconciliation_run(trigger="test", digest=False)
    assert run.status == ReconciliationRun.Status.CLEAN, run.report
    assert run.checked["trades_topic"]["trades_not_on_topic_as_history"] == 2
    assert "history not on the topic" in run.report


def test_manage_reconcile_exits_non_zero_with_a_readable_report(venue, order_path, process_env):
    market, alice, _bob, _resting = venue
    env = process_env | {"KAFKA_TOPIC_PREFIX": order_path}
    Balance.objects.filter(account=alice, asset=market.base).update(held=F("held") + 1)

    result = subprocess.run(
        manage("reconcile"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"balance_mismatch: account #{alice.pk} {market.base.code}" in result.stdout
    assert f"held_mismatch: account #{alice.pk} {market.base.code}" in result.stdout
    assert "Breaks found: " in result.stdout
    assert "books: 1 of 1 compared" in result.stdout
    for label in ("ledger invariants", "positions", "trades topic", "matcher's books"):
        assert label in result.stderr  # the progress of each check
    # the open breaks are counted on /metrics
    metrics = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
    count = ReconciliationBreak.objects.filter(resolved_at__isnull=True).count()
    assert f"tredye_reconciliation_open_breaks {float(count)}" in metrics

    # repaired: this run finds nothing, so it exits 0 (the breaks stay open)
    Balance.objects.filter(account=alice, asset=market.base).update(held=F("held") - 1)
    result = subprocess.run(
        manage("reconcile", "--no-digest"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "still open" in result.stdout
    assert "NOT CHECKED books" in result.stdout


def test_resolving_a_break_requires_a_note_and_happens_once(make_account):
    operator = make_account().user
    run = ReconciliationRun.objects.create(trigger="test")
    row = ReconciliationBreak.objects.create(
        kind="held_mismatch", subject="account #1 USD", detail="held 5 but orders hold 0", run=run
    )

    for note in ("", "   "):
        with pytest.raises(BreakNotResolvable) as refused:
            break_resolve(break_id=row.pk, user=operator, note=note)
        assert refused.value.code == "note_required"
    assert ReconciliationBreak.objects.get(pk=row.pk).resolved_at is None

    resolved = break_resolve(break_id=row.pk, user=operator, note="released by hand")
    assert resolved.resolved_by == operator
    assert resolved.resolution_note == "released by hand"

    with pytest.raises(BreakNotResolvable) as refused:
        break_resolve(break_id=row.pk, user=operator, note="again")
    assert refused.value.code == "already_resolved"
    assert isinstance(refused.value, ValueError)
    with pytest.raises(BreakNotResolvable) as refused:
        break_resolve(break_id=row.pk + 1000, user=operator, note="who?")
    assert refused.value.code == "unknown_break"
    assert "held_mismatch" in KINDS


def test_the_beat_task_reconciles_and_says_which_books_the_matcher_did_not_answer(
    make_instrument, kafka_topics, settings
):
    # given an instrument and no matcher running
    market = make_instrument()
    settings.RECONCILE_DIGEST_TIMEOUT_S = 0.3
    from trading.tasks import reconcile

    # when beat's task runs
    run = ReconciliationRun.objects.get(pk=reconcile.run())

    # then it reconciled, and the book it could not compare is said so, not a break
    assert run.trigger == "beat"
    assert run.status == ReconciliationRun.Status.CLEAN, run.report
    assert run.checked["books"]["not_checked"] == f"the matcher did not answer: {market.symbol}"
    assert f"NOT CHECKED books: the matcher did not answer: {market.symbol}" in run.report
    assert settings.CELERY_BEAT_SCHEDULE["reconcile"] == {
        "task": "trading.tasks.reconcile",
        "schedule": settings.RECONCILE_INTERVAL_S,
    }
