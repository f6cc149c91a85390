"""Settlement and daily statements, with the Celery tasks run by a real worker process.

Real trades (through the order path: relay, matcher) are moved, as they happen, to chosen days
of a past week, so a few seconds of trading play out over Wednesday to Tuesday with a weekend
and a holiday: the ledger and the trades then say exactly what they would have said.
"""

from __future__ import annotations

import datetime
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import Max

from accounts import services as ledger
from accounts.exceptions import InsufficientFunds
from accounts.models import Balance, JournalEntry, Posting
from testing.helpers import (
    assert_ledger_sound,
    balance_of,
    client_for,
    ledger_state,
    new_key,
    place,
    race,
    settled,
    wait_for,
)
from trading import business_days, tasks
from trading.business_days import Calendar, business_days_after, day_bounds, trade_date
from trading.models import DailyStatement, Holiday, Order, Position, Settlement, Trade
from trading.settlement import settlement_pending_list, settlement_run
from trading.statements import statement_build

D = Decimal
UTC = datetime.UTC


# ---------------------------------------------------------------------------------------------
# The business calendar (pure)
# ---------------------------------------------------------------------------------------------

FRIDAY = datetime.date(2026, 11, 20)


def test_business_days_skip_weekends_and_holidays():
    monday = FRIDAY + datetime.timedelta(days=3)
    assert business_days_after(FRIDAY, 1, frozenset()) == monday
    assert business_days_after(FRIDAY, 1, frozenset({monday})) == monday + datetime.timedelta(1)
    assert business_days_after(FRIDAY, 2, frozenset({monday})) == monday + datetime.timedelta(2)
    # T+0 settles on the trade date itself, a Saturday or a holiday included
    saturday = FRIDAY + datetime.timedelta(days=1)
    assert business_days_after(saturday, 0, frozenset()) == saturday
    assert business_days_after(monday, 0, frozenset({monday})) == monday
    with pytest.raises(ValueError, match="negative"):
        business_days_after(FRIDAY, -1, frozenset())


def test_the_day_end_shifts_trades_to_the_next_trading_day():
    end = datetime.time(21, 0)
    before = datetime.datetime(2026, 11, 20, 20, 59, 59, tzinfo=UTC)
    at_end = datetime.datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
    assert trade_date(before, end) == FRIDAY
    assert trade_date(at_end, end) == FRIDAY + datetime.timedelta(days=1)
    assert trade_date(at_end, datetime.time(0)) == FRIDAY
    # a trading day's bounds hold exactly the moments trade_date puts on it
    start, stop = day_bounds(FRIDAY, end)
    assert (start, stop) == (at_end - datetime.timedelta(days=1), at_end)
    assert trade_date(start, end) == FRIDAY
    assert trade_date(stop - datetime.timedelta(microseconds=1), end) == FRIDAY
    assert day_bounds(FRIDAY, datetime.time(0))[0] == datetime.datetime(2026, 11, 20, tzinfo=UTC)
    # a Friday-evening stock trade after the close is Saturday's, and settles on Tuesday
    # across the weekend and a Monday holiday
    calendar = Calendar(frozenset({FRIDAY + datetime.timedelta(days=3)}), end)
    assert calendar.settlement_date(at_end, 1) == FRIDAY + datetime.timedelta(days=4)
    assert calendar.settlement_date(before, 1) == FRIDAY + datetime.timedelta(days=4)
    assert calendar.settlement_date(at_end, 0) == FRIDAY + datetime.timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# A week of trading, settled and stated by the Celery worker
# ---------------------------------------------------------------------------------------------


class Timeline:
    """Moves what the venue wrote since the last move (journal entries, trades) to a moment of
    the past, and gives each moved trade the settlement date the matcher's calendar gives a
    trade made then. The ledger's append-only trigger is set aside for that UPDATE only."""

    def __init__(self, holidays: frozenset[datetime.date]) -> None:
        self.calendar = Calendar(holidays, business_days.day_end())
        self.entry_mark = self._last(JournalEntry)
        self.trade_mark = self._last(Trade)

    @staticmethod
    def _last(model: type) -> int:
        return model.objects.aggregate(last=Max("pk"))["last"] or 0  # type: ignore[attr-defined]

    def at(self, moment: datetime.datetime) -> None:
        table = JournalEntry._meta.db_table
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER journal_entry_append_only")
            cursor.execute(
                f"UPDATE {table} SET created_at = %s WHERE id > %s",  # noqa: S608
                [moment, self.entry_mark],
            )
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER journal_entry_append_only")
            for trade in Trade.objects.filter(pk__gt=self.trade_mark).select_related("instrument"):
                trade.executed_at = moment
                trade.settlement_date = self.calendar.settlement_date(
                    moment, trade.instrument.settlement_days
                )
                trade.save(update_fields=["executed_at", "settlement_date"])
        self.entry_mark = self._last(JournalEntry)
        self.trade_mark = self._last(Trade)


def _filled(order: Order) -> Order:
    def check() -> Order | None:
        fresh = Order.objects.get(pk=order.pk)
        return fresh if fresh.status == Order.Status.FILLED else None

    return wait_for(check, 20, f"order {order.pk} to fill")  # type: ignore[return-value]


def _trade(maker, taker, market, quantity: str, price: str) -> Trade:
    """`maker` sells to `taker` (maker resting first) and the trade is in PostgreSQL."""
    settled(place(maker, market, "sell", quantity, price=price))
    _filled(place(taker, market, "buy", quantity, price=price))
    return Trade.objects.filter(instrument=market).latest("pk")


def _ledger_at(account, asset, moment: datetime.datetime) -> dict[str, Decimal]:
    """The account's buckets of one asset as the postings before `moment` sum them."""
    sums = dict.fromkeys(("available", "held", "pending"), D(0))
    for posting in Posting.objects.filter(
        account=account, asset=asset, entry__created_at__lt=moment
    ):
        sums[posting.bucket] += posting.amount
    return {
        bucket: amount.quantize(D(1).scaleb(-asset.precision)) for bucket, amount in sums.items()
    }


def _closing(statement: dict, code: str) -> dict[str, str]:
    return next(row["closing"] for row in statement["balances"] if row["asset"] == code)


@pytest.mark.django_db(transaction=True)
def test_a_week_of_trades_settles_on_the_right_days(
    order_path, celery_worker, make_instrument, make_account, make_asset
):
    # given: a Thursday at least two weeks back, the Monday after it a holiday
    today = business_days.today()
    thursday = today - datetime.timedelta(days=(today.weekday() - 3) % 7 + 14)
    day = {
        name: thursday + datetime.timedelta(days=offset)
        for offset, name in enumerate(["thu", "fri", "sat", "sun", "mon", "tue"])
    }
    Holiday.objects.create(date=day["mon"], name="Test holiday")

    def moment(name: str, hour: int, minute: int = 0) -> datetime.datetime:
        start, _ = day_bounds(day[name])
        return start + datetime.timedelta(hours=hour, minutes=minute)

    usd = make_asset("USD")
    stock = make_instrument(settlement_days=1)  # T+1
    crypto = make_instrument(settlement_days=0)  # T+0
    timeline = Timeline(frozenset({day["mon"]}))
    alice = make_account(funds={usd: "1000"})
    bob = make_account(funds={stock.base: "10", crypto.base: "10"})
    timeline.at(moment("thu", 1) - datetime.timedelta(days=1))  # funded on Wednesday

    def settle(name: str, at: datetime.datetime) -> dict:
        summary = celery_worker.run(tasks.settle, date_iso=day[name].isoformat())
        timeline.at(at)
        return summary  # type: ignore[return-value]

    # Thursday: alice buys 4 of the stock at 10.00 from bob (T+1: due Friday)
    first = _trade(bob, alice, stock, "4", "10.00")
    timeline.at(moment("thu", 12))
    assert (first.quote_amount, first.buyer_fee, first.seller_fee) == (
        D("40.00"),
        D("0.08"),
        D("0.04"),
    )
    assert Trade.objects.get(pk=first.pk).settlement_date == day["fri"]
    assert balance_of(alice, stock.base) == (0, 0, D(4))
    assert balance_of(bob, usd) == (0, 0, D("39.96"))

    # nothing settles before its day
    assert settle("thu", moment("thu", 23))["trades"] == 0
    assert balance_of(alice, stock.base) == (0, 0, D(4))
    with pytest.raises(Exception, match="nothing settles before its day"):
        celery_worker.run(tasks.settle, date_iso=(today + datetime.timedelta(days=1)).isoformat())

    # Friday: the Thursday trade settles, through the clearing account, one entry per account
    summary = settle("fri", moment("fri", 0, 5))
    assert summary == {"date": day["fri"].isoformat(), "accounts": 2, "settlements": 2, "trades": 2}
    assert balance_of(alice, stock.base) == (D(4), 0, 0)
    assert balance_of(bob, usd) == (D("39.96"), 0, 0)
    first.refresh_from_db()
    assert first.buyer_settlement.account_id == alice.pk  # type: ignore[union-attr]
    assert first.seller_settlement.amount == D("39.96")  # type: ignore[union-attr]
    assert first.seller_settlement.entry.postings.count() == 4  # type: ignore[union-attr]

    # Friday: alice sells 1 back at 11.00 (T+1 from Friday: the weekend, then the holiday)
    second = _trade(alice, bob, stock, "1", "11.00")
    timeline.at(moment("fri", 12))
    assert Trade.objects.get(pk=second.pk).settlement_date == day["tue"]
    alice_usd = D("1000") - D("40.08")
    assert balance_of(alice, usd) == (alice_usd, 0, D("10.99"))  # 11.00 less 0.01 maker fee

    # Saturday: bob sells 2 crypto at 5.00 to alice (T+0: due Saturday itself)
    third = _trade(bob, alice, crypto, "2", "5.00")
    timeline.at(moment("sat", 12))
    assert Trade.objects.get(pk=third.pk).settlement_date == day["sat"]
    alice_usd -= D("10.02")

    # the operator's command settles Saturday, showing its progress: only the crypto trade
    out = io.StringIO()
    call_command("settle", "--date", day["sat"].isoformat(), stdout=out)
    timeline.at(moment("sat", 13))
    assert "2/2 accounts (100%)" in out.getvalue()
    assert "2 account(s) settled, 2 settlement(s), 2 trade side(s)" in out.getvalue()
    assert balance_of(alice, crypto.base) == (D(2), 0, 0)
    assert balance_of(alice, usd) == (alice_usd, 0, D("10.99"))
    assert balance_of(bob, stock.base) == (D(6), 0, D(1))
    for name in ("sun", "mon"):  # the weekend and the holiday settle nothing
        assert settle(name, moment(name, 0, 5))["trades"] == 0
    assert balance_of(bob, stock.base) == (D(6), 0, D(1))
    assert [
        (row.asset.code, row.date, row.amount)
        for row in settlement_pending_list(account_id=alice.pk)
    ] == [("USD", day["tue"], D("10.99"))]

    # the balances page shows it apart from the settled funds, with the day it settles on
    page = client_for(alice).get("/accounts/balances/").content.decode()
    assert '<td class="num" data-field="settled">949.90</td>' in page
    assert '<td class="num" data-field="pending">10.99</td>' in page
    assert f'<tr data-asset="USD" data-date="{day["tue"].isoformat()}">' in page

    # a withdrawal of unsettled funds is refused, saying what is pending, and changes nothing
    before = ledger_state()
    with pytest.raises(InsufficientFunds, match=r"10\.99 USD more is pending settlement"):
        ledger.withdraw(
            account=alice,
            asset=usd,
            amount=alice_usd + D("0.01"),
            reference="payout",
            idempotency_key=new_key(),
        )
    assert ledger_state() == before

    # Tuesday: the Friday trade settles; then the settled funds can be withdrawn
    assert settle("tue", moment("tue", 0, 5))["trades"] == 2
    assert balance_of(alice, usd) == (alice_usd + D("10.99"), 0, 0)
    assert balance_of(bob, stock.base) == (D(7), 0, 0)
    ledger.withdraw(
        account=alice,
        asset=usd,
        amount=alice_usd + D("0.01"),
        reference="payout",
        idempotency_key=new_key(),
    )
    timeline.at(moment("tue", 12))
    assert balance_of(alice, usd) == (D("10.98"), 0, 0)

    # settling again changes nothing; every side was settled exactly once
    before = ledger_state()
    assert settle("tue", moment("tue", 13))["trades"] == 0
    assert ledger_state() == before
    assert not Trade.objects.filter(buyer_settlement__isnull=True).exists()
    assert not Trade.objects.filter(seller_settlement__isnull=True).exists()
    assert sum(Settlement.objects.values_list("trade_count", flat=True)) == 6

    # the operator's command finds nothing either, and refuses a date it cannot read
    out = io.StringIO()
    call_command("settle", "--date", day["tue"].isoformat(), stdout=out)
    assert "0 account(s) settled" in out.getvalue()
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("settle", "--date", "27/11/2026")

    # statements of the past days, stored by the worker: their figures are the ledger's
    for name in ("thu", "fri", "sat", "sun", "mon", "tue"):
        stored = celery_worker.run(tasks.store_statements, date_iso=day[name].isoformat())
        assert stored["stored"] == 2, (name, stored)  # type: ignore[index]
    again = celery_worker.run(tasks.store_statements, date_iso=day["fri"].isoformat())
    assert (again["stored"], again["kept"]) == (0, 2)  # type: ignore[index]
    with pytest.raises(Exception, match="stored once it has ended"):
        celery_worker.run(tasks.store_statements, date_iso=today.isoformat())

    statements = {(row.account_id, row.date): row.data for row in DailyStatement.objects.all()}
    for account in (alice, bob):
        for name in day:
            data = statements[(account.pk, day[name])]
            start, end = day_bounds(day[name])
            for row in data["balances"]:
                asset = make_asset(row["asset"])
                opening, closing = (
                    _ledger_at(account, asset, start),
                    _ledger_at(account, asset, end),
                )
                assert {k: D(v) for k, v in row["opening"].items() if k != "total"} == opening
                assert {k: D(v) for k, v in row["closing"].items() if k != "total"} == closing
            trades = Trade.objects.filter(executed_at__gte=start, executed_at__lt=end)
            mine = [t for t in trades if account.pk in (t.buyer_id, t.seller_id)]
            assert data["trade_count"] == len(mine)
            fees = sum(
                (t.buyer_fee if t.buyer_id == account.pk else t.seller_fee for t in mine), D(0)
            )
            assert sum((D(fee["amount"]) for fee in data["fees"]), D(0)) == fees
    # the last day closes on the balances as they are now
    for account in (alice, bob):
        for balance in Balance.objects.filter(account=account).select_related("asset"):
            closing = _closing(statements[(account.pk, day["tue"])], balance.asset.code)
            assert (D(closing["available"]), D(closing["held"]), D(closing["pending"])) == (
                balance.available,
                balance.held,
                balance.pending,
            )

    # Friday's statement of alice, by hand: one maker sale, its fee, 1.00 realised
    friday = statements[(alice.pk, day["fri"])]
    assert [
        (t["symbol"], t["side"], t["quantity"], t["price"], t["fee"], t["liquidity"])
        for t in friday["trades"]
    ] == [(stock.symbol, "sell", "1", "11.00", "0.01", "maker")]
    assert friday["realized_pnl"] == [{"symbol": stock.symbol, "asset": "USD", "amount": "1"}]
    assert _closing(friday, "USD") == {
        "available": "959.92",
        "held": "0.00",
        "pending": "10.99",
        "total": "970.91",
    }
    position = Position.objects.get(account=alice, instrument=stock)
    total_realized = sum(
        (
            D(row["amount"])
            for data in statements.values()
            for row in data["realized_pnl"]
            if data["account_id"] == alice.pk and row["symbol"] == stock.symbol
        ),
        D(0),
    )
    assert total_realized == position.realized_pnl == D(1)
    assert statement_build(account_id=alice.pk, date=day["sun"])["trades"] == []

    # the trader downloads their own statements, and nobody else's
    client = client_for(alice)
    page = client.get("/accounts/balances/").content.decode()
    assert "Nothing is pending settlement." in page
    assert f'href="/trading/statements/{day["fri"].isoformat()}.pdf"' in page
    csv_text = client.get(f"/trading/statements/{day['fri'].isoformat()}.csv").content.decode()
    assert f",{stock.symbol},{second.seq},sell,1,11.00,11.00,0.01,USD,maker\r\n" in csv_text
    assert "realised P&L" in csv_text
    assert f"{stock.symbol},USD,1" in csv_text
    pdf = client.get(f"/trading/statements/{day['fri'].isoformat()}.pdf")
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert (
        client_for(make_account())
        .get(f"/trading/statements/{day['fri'].isoformat()}.csv")
        .status_code
        == 404
    )
    listing = client.get("/trading/statements/").content.decode()
    for name in day:
        assert f'href="/trading/statements/{day[name].isoformat()}.csv"' in listing
    bad = client.get("/trading/statements/2026-13-01.csv")
    assert bad.status_code == 400
    assert b"YYYY-MM-DD" in bad.content

    assert_ledger_sound()


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_run_resumes_racing_runs_settle_each_side_once(
    order_path, make_instrument, make_account, make_asset
):
    # given: two T+0 fills of one buy order at 0.001: the first costs 0.01 (its notional
    # rounded up), the second nothing (0.002 still rounds to 0.01), so its seller's side is zero
    usd = make_asset("USD")
    market = make_instrument(tick="0.001", settlement_days=0)
    buyer = make_account(funds={usd: "10"})
    seller = make_account(funds={market.base: "5"})
    settled(place(seller, market, "sell", "1", price="0.001"))
    settled(place(seller, market, "sell", "1", price="0.001"))
    _filled(place(buyer, market, "buy", "2", price="0.001"))
    first, second = Trade.objects.filter(instrument=market).order_by("seq")
    assert (first.quote_amount, second.quote_amount) == (D("0.01"), D(0))
    assert settlement_pending_list(account_id=seller.pk)[0].amount == D("0.01")

    # when: a run stops after its first account (the buyer's, the lower id)...
    class Stopped(Exception):
        pass

    def stop(_step: object) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        settlement_run(date=business_days.today(), progress=stop)
    assert balance_of(buyer, market.base) == (D(2), 0, 0)
    assert balance_of(seller, usd) == (0, 0, D("0.01"))

    # ... and two runs then race for the rest
    outcomes = race(2, lambda _: settlement_run(date=business_days.today()))

    # then: each side with something to move is settled once, by one of them
    assert not [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert sum(outcome.trades for outcome in outcomes) == 1  # type: ignore[union-attr]
    assert balance_of(buyer, market.base) == (D(2), 0, 0)
    assert balance_of(seller, usd) == (D("0.01"), 0, 0)
    rows = {(row.account_id, row.asset_id): row for row in Settlement.objects.all()}
    assert rows[(buyer.pk, market.base_id)].trade_count == 2
    assert rows[(seller.pk, usd.pk)].amount == D("0.01")
    second.refresh_from_db()
    assert second.buyer_settlement_id is not None
    assert second.seller_settlement_id is None  # nothing to move: never settled, never due
    assert settlement_pending_list(account_id=seller.pk) == []
    assert settlement_run(date=business_days.today()).trades == 0
    assert_ledger_sound()
