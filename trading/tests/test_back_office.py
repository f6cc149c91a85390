"""The back office in the admin: an operator finds and cancels orders through the services and
the trader sees it; every action is in the audit log; the big lists count no table and every
search and filter runs on an index (the plans are checked, not timings); dead letters and the
processes' checkpoints are visible."""

from __future__ import annotations

import datetime
import logging
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account, JournalEntry
from testing.helpers import client_for, place, settled, wait_for
from trading.models import (
    DeadLetter,
    Holiday,
    Instrument,
    MatcherCheckpoint,
    Order,
    ReconciliationBreak,
    ReconciliationRun,
    Settlement,
    Trade,
)
from tredye import kafka, status
from tredye.workers import KafkaWorker

ORDERS_URL = "/admin/trading/order/"
TRADES_URL = "/admin/trading/trade/"


def _api_status(trader: Client, order: Order) -> str:
    return trader.get(f"/trading/api/orders/{order.pk}/").json()["order"]["status"]


def _audit(target: object, model: type) -> list[LogEntry]:
    content_type = ContentType.objects.get_for_model(model)
    return list(
        LogEntry.objects.filter(content_type=content_type, object_id=str(target.pk))  # type: ignore[attr-defined]
        .select_related("user")
        .order_by("pk")
    )


# -- the operator's actions on the real order path ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_operator_finds_an_order_by_client_order_id_cancels_it_and_the_trader_sees_it(
    order_path, make_instrument, make_account, admin_client, admin_user
):
    with override_settings(KAFKA_TOPIC_PREFIX=order_path):
        # given: a trader with open orders, one under a client order id the operator was told
        market = make_instrument()
        alice = make_account(funds={market.quote: "1000"})
        wanted_id = uuid.uuid4().hex
        wanted = settled(place(alice, market, price="10.00", client_order_id=wanted_id))
        other = settled(place(alice, market, price="11.00"))
        trader = client_for(alice)
        assert _api_status(trader, wanted) == "new"

        # when: the operator searches the order list for it
        found = admin_client.get(ORDERS_URL, {"q": wanted_id})
        # then: exactly that order is listed
        assert [order.pk for order in found.context["cl"].result_list] == [wanted.pk]

        # when: the operator cancels it from the order's page
        page = admin_client.get(reverse("admin:trading_order_change", args=[wanted.pk]))
        cancel_url = reverse("admin:trading_order_cancel", args=[wanted.pk])
        assert cancel_url in page.content.decode()
        done = admin_client.post(cancel_url, follow=True)
        assert f"Cancel of order #{wanted.pk} asked" in done.content.decode()

        # then: the trader sees it canceled once the matcher applied it, the other order open
        wait_for(lambda: _api_status(trader, wanted) == "canceled", what="the cancel applied")
        assert _api_status(trader, other) == "new"
        # and its page shows the ledger entries it caused: its hold, then the release
        hold, release = JournalEntry.objects.filter(reference=f"order {wanted.pk}").order_by("pk")
        page = admin_client.get(reverse("admin:trading_order_change", args=[wanted.pk]))
        entries = page.content.decode().split('class="form-row field-ledger_entries"')[1]
        for entry, kind in ((hold, "hold"), (release, "release")):
            assert f">#{entry.pk}</a></td><td>{kind}</td><td>order {wanted.pk}</td>" in entries
        # and the audit log says who did what to it
        (entry,) = _audit(wanted, Order)
        assert entry.user == admin_user
        assert "order_cancel" in entry.get_change_message()
        assert wanted_id in entry.get_change_message()
        log_page = admin_client.get("/admin/admin/logentry/", {"user__id__exact": admin_user.pk})
        assert f"#{wanted.pk} buy" in log_page.content.decode()

        # when: the operator cancels every open order of the account, from the account's page
        more = settled(place(alice, market, price="9.00"))
        account_page = admin_client.get(reverse("admin:accounts_account_change", args=[alice.pk]))
        cancel_all_url = reverse("admin:trading_order_cancel_all", args=[alice.pk])
        assert cancel_all_url in account_page.content.decode()
        confirm = admin_client.get(cancel_all_url)
        assert "<strong>2</strong> open orders" in confirm.content.decode()
        admin_client.post(cancel_all_url, follow=True)

        # then: the trader sees both canceled, and the log has the account's and each order's
        for order in (other, more):
            wait_for(lambda o=order: _api_status(trader, o) == "canceled", what="cancel-all")
        (account_entry,) = _audit(alice, Account)
        assert "cancel_all: 2 order(s)" in account_entry.get_change_message()
        assert account_entry.user == admin_user
        assert len(_audit(more, Order)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_poison_record_becomes_a_dead_letter_and_the_processes_page_shows_the_matcher(
    order_path, make_instrument, make_account, admin_client
):
    with override_settings(KAFKA_TOPIC_PREFIX=order_path):
        market = make_instrument()
        alice = make_account(funds={market.quote: "1000"})
        producer = kafka.producer()
        producer.send(
            kafka.topic(kafka.ORDERS), key=market.symbol.encode(), value=b"poison \x00 not json"
        )
        producer.flush()
        producer.close()
        # the same key, so the same partition after the poison: once this order is in, the
        # matcher has read past the poison record
        settled(place(alice, market, price="10.00"))

        (letter,) = DeadLetter.objects.all()
        assert (letter.worker, letter.topic) == ("matcher", kafka.topic(kafka.ORDERS))
        assert letter.value == "poison \\x00 not json"
        listed = admin_client.get("/admin/trading/deadletter/").content.decode()
        assert reverse("admin:trading_deadletter_change", args=[letter.pk]) in listed
        assert letter.reason[:30] in listed

        checkpoint = MatcherCheckpoint.objects.get(topic=letter.topic, partition=letter.partition)
        assert checkpoint.offset > letter.offset
        wait_for(lambda: "matcher" in status.worker_reports(), what="the matcher's report")
        page = admin_client.get(reverse("admin:trading_processes")).content.decode()
        assert 'class="worker-matcher"' in page
        assert (
            f'<tr class="checkpoint"><td>{checkpoint.topic}</td><td>{checkpoint.partition}</td>'
            f"<td>{checkpoint.offset}</td>" in page
        )
        assert reverse("admin:trading_processes") in admin_client.get("/admin/").content.decode()


def test_a_failing_dead_letter_sink_is_logged_and_the_worker_goes_on(db, caplog):
    # A worker name longer than the column: PostgreSQL refuses the row, the worker must not care.
    worker = KafkaWorker()
    worker.name = "w" * 80
    kafka.ensure_topics([kafka.DEAD_LETTER])
    record = SimpleNamespace(topic="t", partition=0, offset=7, key=b"k", value=b"v")
    with caplog.at_level(logging.ERROR, logger="tredye.workers"):
        worker.dead_letter(record, "bad")
    assert worker.dead_lettered == 1
    assert "dead-letter sink" in caplog.text
    assert not DeadLetter.objects.exists()
    worker.name = "probe"
    worker.dead_letter(record, "bad again")
    assert DeadLetter.objects.get().reason == "bad again"


# -- big lists: no count of the table, an index for every search and filter -----------------------


def _seed(market: Instrument, other: Instrument, accounts: list[Account], rows: int) -> None:
    """`rows` orders spread over the accounts and two instruments, a trade for each pair."""
    now = timezone.now()
    statuses = [Order.Status.NEW, Order.Status.FILLED, Order.Status.CANCELED]
    orders = Order.objects.bulk_create(
        Order(
            account=accounts[i % len(accounts)],
            instrument=(market, other)[i % 3 == 0],
            client_order_id=uuid.uuid4().hex,
            side=("buy", "sell")[i % 2],
            type=Order.Type.LIMIT,
            time_in_force=Order.TimeInForce.GTC,
            quantity=Decimal(1),
            price=Decimal(10),
            status=statuses[i % 3],
            maker_fee_rate=Decimal(0),
            taker_fee_rate=Decimal(0),
            created_at=now - datetime.timedelta(minutes=rows - i),
        )
        for i in range(rows)
    )
    start = Trade.objects.filter(instrument=market).count()
    Trade.objects.bulk_create(
        Trade(
            instrument=market,
            seq=start + n + 1,
            maker_order=orders[2 * n],
            taker_order=orders[2 * n + 1],
            buyer=orders[2 * n + 1].account,
            seller=orders[2 * n].account,
            price=Decimal(10),
            quantity=Decimal(1),
            quote_amount=Decimal(10),
            aggressor_side="buy",
            executed_at=now - datetime.timedelta(minutes=rows - n),
            settlement_date=now.date(),
        )
        for n in range(rows // 2)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE trading_order")
        cursor.execute("ANALYZE trading_trade")


def _plans(queries: list[dict], table: str) -> list[str]:
    """EXPLAIN of every query of a page that reads `table`, with sequential scans priced out:
    one shows up only where no index can serve."""
    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            for query in queries:
                sql = query["sql"]
                if sql.startswith("SELECT") and f'FROM "{table}"' in sql:
                    cursor.execute(f"EXPLAIN {sql}")
                    plans.append("\n".join(row[0] for row in cursor.fetchall()))
        finally:
            cursor.execute("RESET enable_seqscan")
    return plans


def _list(client: Client, url: str, params: dict) -> tuple[object, list[dict]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, params
    return response, captured.captured_queries


def _assert_served_by_indexes(
    client: Client, url: str, table: str, cases: list[tuple[dict, str | None]]
) -> None:
    """For each list (its search and filter parameters): no COUNT of the whole table, no
    sequential scan of it, and the index named where one serves that search alone."""
    for params, index in cases:
        _, queries = _list(client, url, params)
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and table in q["sql"]]
        assert counts, params
        assert all(" LIMIT " in sql for sql in counts), counts
        plans = _plans(queries, table)
        assert plans, params
        for plan in plans:
            assert f"Seq Scan on {table}" not in plan, (params, plan)
        if index and not any(index in plan for plan in plans):
            pytest.fail(f"{params} does not use {index}:\n" + "\n\n".join(plans))


@pytest.mark.django_db
def test_the_order_and_trade_lists_count_no_table_and_search_and_filter_on_indexes(
    admin_client, make_instrument, make_account
):
    market, other = make_instrument(), make_instrument()
    # each account a few per cent of the rows, as on a venue
    alice, bob, *crowd = (make_account() for _ in range(25))
    _seed(market, other, [alice, bob, *crowd], rows=3000)
    some = Order.objects.filter(account=alice).order_by("pk")[10]
    week = {
        "created_at__gte": (timezone.now() - datetime.timedelta(days=7)).isoformat(),
        "created_at__lt": (timezone.now() + datetime.timedelta(days=1)).isoformat(),
    }
    # each search and filter, and the index it must use where one exists for it alone
    order_cases = [
        ({}, None),
        ({"q": some.client_order_id}, "order_client_order_id"),
        ({"q": f"client:{some.client_order_id}"}, "order_client_order_id"),
        ({"q": alice.user.username}, "order_account_recent"),
        ({"q": f"user:{alice.user.username}"}, "order_account_recent"),
        ({"q": f"account:{alice.pk}"}, "order_account_recent"),
        ({"q": str(alice.pk)}, "order_account_recent"),
        ({"q": f"id:{some.pk}"}, "trading_order_pkey"),
        ({"q": market.symbol}, None),
        ({"status__exact": "canceled"}, None),
        ({"side__exact": "sell"}, None),
        ({"instrument__id__exact": other.pk}, None),
        (week, None),
        ({**week, "status__exact": "new", "q": alice.user.username}, "order_account_recent"),
    ]
    _assert_served_by_indexes(admin_client, ORDERS_URL, "trading_order", order_cases)
    unfiltered = admin_client.get(ORDERS_URL).content.decode()
    assert "about 3," in unfiltered  # the planner's estimate, said as one

    first = Trade.objects.order_by("pk").first()
    trade_cases = [
        ({}, None),
        ({"q": f"account:{bob.pk}"}, "trade_buyer_recent"),
        ({"q": f"user:{alice.user.username}"}, "trade_seller_recent"),
        ({"q": f"order:{first.maker_order_id}"}, "maker_order_id"),
        ({"q": f"client:{first.taker_order.client_order_id}"}, "taker_order_id"),
        ({"q": market.symbol}, None),
        ({"aggressor_side__exact": "buy"}, None),
        (
            {
                "executed_at__gte": week["created_at__gte"],
                "executed_at__lt": week["created_at__lt"],
            },
            None,
        ),
    ]
    _assert_served_by_indexes(admin_client, TRADES_URL, "trading_trade", trade_cases)


@pytest.mark.django_db
def test_the_order_list_makes_as_many_queries_for_many_rows_as_for_few(
    admin_client, make_instrument, make_account
):
    market, other = make_instrument(), make_instrument()
    alice, bob = make_account(), make_account()
    # past the look-ahead already (a page and five more), then ten times the rows
    _seed(market, other, [alice, bob], rows=520)
    pages = [ORDERS_URL, TRADES_URL]
    before = [len(_list(admin_client, url, {})[1]) for url in pages]
    _seed(market, other, [make_account() for _ in range(5)], rows=5000)
    after = [len(_list(admin_client, url, {})[1]) for url in pages]
    assert after == before
    searched = [len(_list(admin_client, url, {"q": alice.user.username})[1]) for url in pages]
    assert max(searched) <= max(before) + 2  # the username's account is looked up first
    # an order's page shows its fills
    order = Order.objects.filter(pk__in=Trade.objects.values("maker_order_id")).first()
    page = admin_client.get(reverse("admin:trading_order_change", args=[order.pk]))
    assert page.status_code == 200
    assert reverse(
        "admin:trading_trade_change", args=[Trade.objects.get(maker_order=order).pk]
    ) in (page.content.decode())


# -- settlement, holidays, reconciliation ---------------------------------------------------------


@pytest.mark.django_db
def test_settlements_show_their_trades_and_trades_their_settlement(
    admin_client, make_instrument, make_account
):
    market, other = make_instrument(), make_instrument()
    alice, bob = make_account(funds={market.quote: "1"}), make_account()
    _seed(market, other, [alice, bob], rows=4)
    trade = Trade.objects.filter(instrument=market).first()
    entry = JournalEntry.objects.filter(kind="deposit").first()  # any balanced entry will do
    settlement = Settlement.objects.create(
        account=trade.buyer,
        asset=market.base,
        date=trade.settlement_date,
        amount=Decimal(1),
        trade_count=1,
        entry=entry,
    )
    Trade.objects.filter(pk=trade.pk).update(buyer_settlement=settlement)

    shown = admin_client.get(reverse("admin:trading_settlement_change", args=[settlement.pk]))
    assert reverse("admin:trading_trade_change", args=[trade.pk]) in shown.content.decode()
    trade_page = admin_client.get(reverse("admin:trading_trade_change", args=[trade.pk]))
    text = trade_page.content.decode()
    assert f"settlement #{settlement.pk}" in text
    assert f"seller: due on {trade.settlement_date}" in text
    found = admin_client.get(
        "/admin/trading/settlement/", {"q": f"user:{trade.buyer.user.username}"}
    )
    assert list(found.context["cl"].result_list) == [settlement]


@pytest.mark.django_db
def test_holidays_are_edited_in_the_admin_and_settlement_days_is_an_ordinary_field(
    admin_client, make_instrument
):
    admin_client.post(
        "/admin/trading/holiday/add/", {"date": "2026-12-25", "name": "Christmas Day"}
    )
    admin_client.post("/admin/trading/holiday/add/", {"date": "2026-01-01", "name": "New Year"})
    listed = admin_client.get("/admin/trading/holiday/")
    assert [h.name for h in listed.context["cl"].result_list] == ["New Year", "Christmas Day"]
    assert Holiday.objects.count() == 2

    market = make_instrument()
    form = admin_client.get(reverse("admin:trading_instrument_change", args=[market.pk]))
    assert 'name="settlement_days"' in form.content.decode()
    data = {
        "symbol": market.symbol,
        "name": market.name,
        "base": market.base_id,
        "quote": market.quote_id,
        "settlement_days": "0",
    }
    admin_client.post(reverse("admin:trading_instrument_change", args=[market.pk]), data)
    market.refresh_from_db()
    assert market.settlement_days == 0
    assert market.tick_size == Decimal("0.01")  # the rules did not move


@pytest.mark.django_db
def test_open_breaks_have_a_badge_and_are_resolved_with_a_note(admin_client, admin_user):
    run = ReconciliationRun.objects.create(trigger="test", status=ReconciliationRun.Status.BREAKS)
    off, gone = (
        ReconciliationBreak.objects.create(kind=kind, subject=subject, detail="d", run=run)
        for kind, subject in (("balance", "account #1 USD"), ("trade_missing", "AAPL trade 7"))
    )
    assert '<span class="badge badge-alert" id="open-breaks">2</span>' in (
        admin_client.get("/admin/").content.decode()
    )
    listed = admin_client.get("/admin/trading/reconciliationbreak/", {"state": "open"})
    assert {b.pk for b in listed.context["cl"].result_list} == {off.pk, gone.pk}

    # a note is required: without one nothing changes
    url = "/admin/trading/reconciliationbreak/"
    asked = admin_client.post(
        url, {"action": "resolve", "_selected_action": [off.pk], "apply": "1"}
    )
    assert "A break is resolved with a note." in asked.content.decode()
    off.refresh_from_db()
    assert off.resolved_at is None

    admin_client.post(
        url,
        {"action": "resolve", "_selected_action": [off.pk], "apply": "1", "note": "bank fee"},
    )
    off.refresh_from_db()
    assert off.resolved_at is not None
    assert (off.resolved_by, off.resolution_note) == (admin_user, "bank fee")
    (entry,) = _audit(off, ReconciliationBreak)
    assert "bank fee" in entry.get_change_message()
    assert '<span class="badge badge-alert" id="open-breaks">1</span>' in (
        admin_client.get("/admin/").content.decode()
    )
