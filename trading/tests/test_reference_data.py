"""Reference data that money depends on (issue 10, decision 0010): an instrument's base and
quote and its assets' precision are fixed once used; its trading rules change through
`instrument_rules_change`, for new orders only, and the matcher goes on working after it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import override_settings

from accounts.models import Asset, Balance
from accounts.selectors import ledger_verify
from testing.helpers import place, read_topic, settled, wait_for
from trading.matching.books import RULES_CHANGED
from trading.matching.commands import PLACE, RULES_CHANGE, Command
from trading.matching.matcher import Matcher
from trading.models import Instrument, Order, Outbox, Trade
from trading.reference import (
    InvalidRule,
    RulesChangeRefused,
    instrument_rules_change,
)
from trading.services import instrument_status_set, order_replace
from tredye import kafka

D = Decimal


def buy(account, market, client_order_id: str, quantity: str, price: str) -> Order:
    return place(account, market, "buy", quantity, client_order_id=client_order_id, price=price)


def sell(account, market, client_order_id: str, quantity: str, price: str) -> Order:
    return place(account, market, "sell", quantity, client_order_id=client_order_id, price=price)


def rules_commands(market: Instrument) -> list[Outbox]:
    return list(Outbox.objects.filter(key=market.symbol, type=RULES_CHANGE).order_by("pk"))


# ---------------------------------------------------------------------------------------------
# Base, quote and precision: fixed once used, whatever the path
# ---------------------------------------------------------------------------------------------


def _change_assets(market: Instrument, other: Asset, how: str) -> None:
    with transaction.atomic():
        if how == "orm":
            Instrument.objects.filter(pk=market.pk).update(quote=other)
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE trading_instrument SET base_id = %s WHERE id = %s",
                    [other.pk, market.pk],
                )


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["orm", "sql"])
def test_the_database_refuses_to_change_base_or_quote_of_an_instrument_with_orders(
    make_instrument, make_account, make_asset, how
):
    market = make_instrument()
    buy(make_account(funds={market.quote: "100"}), market, "b", "1", "10.00")
    other = make_asset("EUR", 2)
    with pytest.raises(IntegrityError, match=f"instrument {market.symbol} has orders"):
        _change_assets(market, other, how)
    market.refresh_from_db()
    assert market.quote.code == "USD"
    assert ledger_verify() == []


@pytest.mark.django_db
def test_base_and_quote_of_an_unused_instrument_may_change_and_a_form_sees_the_rule(
    make_instrument, make_account, make_asset
):
    market = make_instrument()
    euro = make_asset("EUR", 2)
    Instrument.objects.filter(pk=market.pk).update(quote=euro)  # no order yet: allowed
    market.refresh_from_db()
    assert market.quote == euro
    buy(make_account(funds={euro: "100"}), market, "b", "1", "10.00")
    market.quote = make_asset("USD", 2)
    with pytest.raises(ValidationError) as refused:
        market.full_clean()
    assert "has orders" in refused.value.message_dict["quote"][0]


@pytest.mark.django_db
def test_an_asset_that_only_an_instrument_refers_to_keeps_its_precision(make_instrument):
    market = make_instrument()  # its base asset has no balance, no posting: only the instrument
    base = market.base
    assert base.is_used()
    with (
        pytest.raises(IntegrityError, match=f"asset {base.code} is in use .instruments"),
        transaction.atomic(),
    ):
        Asset.objects.filter(pk=base.pk).update(precision=3)
    base.refresh_from_db()
    assert base.precision == 0


# ---------------------------------------------------------------------------------------------
# The rules service
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_fee_change_is_written_with_a_command_for_the_matcher(make_instrument):
    market = make_instrument()
    changed = instrument_rules_change(
        symbol=market.symbol.lower(), changed_by="ops", maker_fee_rate="0.0005", max_quantity=""
    )
    assert (changed.maker_fee_rate, changed.taker_fee_rate) == (D("0.0005"), D("0.002"))
    market.refresh_from_db()
    assert market.maker_fee_rate == D("0.0005")
    [command] = rules_commands(market)
    assert command.topic == kafka.ORDERS
    assert command.data["changed"] == ["maker_fee_rate"]
    assert command.data["changed_by"] == "ops"
    assert command.data["rules"]["maker_fee_rate"] == "0.0005"
    assert command.data["rules"]["tick_size"] == "0.01"
    assert command.data["rules"]["max_quantity"] is None
    # the same rules again change nothing and send nothing
    instrument_rules_change(symbol=market.symbol, maker_fee_rate=D("0.0005"))
    assert len(rules_commands(market)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rules", "code"),
    [
        ({"tick_size": "0"}, "invalid_tick_size"),
        ({"tick_size": "abc"}, "invalid_tick_size"),
        ({"lot_size": "0.5"}, "invalid_lot_size"),  # the base asset has 0 decimal places
        ({"taker_fee_rate": "1"}, "invalid_taker_fee_rate"),
        ({"maker_fee_rate": "-0.1"}, "invalid_maker_fee_rate"),
        ({"maker_fee_rate": 0.1}, "invalid_maker_fee_rate"),
        ({"price_band_pct": "100"}, "invalid_price_band_pct"),
        ({"min_quantity": "5", "max_quantity": "2"}, "invalid_max_quantity"),
        ({"tick_size": "0.000000000001"}, "invalid_tick_size"),
        ({"status": "open"}, "unknown_rule"),
    ],
)
def test_bad_rules_are_refused_and_change_nothing(make_instrument, rules, code):
    market = make_instrument()
    with pytest.raises(InvalidRule) as refused:
        instrument_rules_change(symbol=market.symbol, **rules)
    assert refused.value.code == code
    assert Instrument.objects.get(pk=market.pk).tick_size == D("0.01")
    assert rules_commands(market) == []


@pytest.mark.django_db
def test_a_tick_or_lot_change_needs_a_halted_instrument_without_open_orders(
    make_instrument, make_account
):
    market = make_instrument()
    account = make_account(funds={market.quote: "100"})
    order = buy(account, market, "b", "1", "10.03")
    with pytest.raises(RulesChangeRefused) as refused:
        instrument_rules_change(symbol=market.symbol, tick_size="0.05")
    assert refused.value.code == "instrument_not_halted"
    assert "halt it" in refused.value.detail
    instrument_status_set(symbol=market.symbol, status=Instrument.Status.HALTED)
    with pytest.raises(RulesChangeRefused) as refused:
        instrument_rules_change(symbol=market.symbol, lot_size="2")
    assert refused.value.code == "book_not_empty"
    assert "1 open order(s)" in refused.value.detail
    market.refresh_from_db()
    assert (market.tick_size, market.lot_size) == (D("0.01"), D("1"))
    assert rules_commands(market) == []
    # fees may change on a book with open orders: the order keeps its own
    instrument_rules_change(symbol=market.symbol, taker_fee_rate="0.01")
    order.refresh_from_db()
    assert (order.maker_fee_rate, order.taker_fee_rate) == (D("0.001"), D("0.002"))
    # once the order is closed (and its command applied), the grid may change
    Order.objects.filter(pk=order.pk).update(status=Order.Status.CANCELED, held=0)
    Outbox.objects.filter(key=market.symbol).update(applied_at="2026-01-01T00:00:00Z")
    instrument_rules_change(symbol=market.symbol, tick_size="0.05", lot_size="2")
    market.refresh_from_db()
    assert (market.tick_size, market.lot_size) == (D("0.05"), D("2"))


# ---------------------------------------------------------------------------------------------
# The matcher: orders off the grid are closed, never dead-lettered (no Kafka: batches directly)
# ---------------------------------------------------------------------------------------------


def _places(*orders: Order) -> list[Command]:
    """The orders' place commands as the relay delivers them (with their outbox ids)."""
    return [
        Command(
            PLACE,
            order.instrument.symbol,
            order.pk,
            outbox_id=Outbox.objects.get(type=PLACE, data__order_id=order.pk).pk,
        )
        for order in orders
    ]


def _rules(market: Instrument, **changes: str) -> dict:
    rules = {name: getattr(market, name) for name in Instrument.RULES}
    return rules | {name: D(value) for name, value in changes.items()}


@pytest.mark.django_db
def test_an_order_placed_under_the_old_tick_and_applied_after_the_change_is_rejected(
    make_instrument, make_account
):
    market = make_instrument()
    account = make_account(funds={market.quote: "100"})
    order = buy(account, market, "raced", "1", "10.03")  # validated under tick 0.01
    # the change committed while the order was being placed (the service saw no open order)
    Instrument.objects.filter(pk=market.pk).update(tick_size=D("0.05"))
    matcher = Matcher()
    matcher.run_batch(
        [
            Command(RULES_CHANGE, market.symbol, 0, rules=_rules(market, tick_size="0.05")),
            *_places(order),
        ]
    )
    order.refresh_from_db()
    assert (order.status, order.reason, order.held) == ("rejected", RULES_CHANGED, 0)
    assert Balance.objects.get(account=account, asset=market.quote).held == 0
    assert ledger_verify() == []


@pytest.mark.django_db
def test_a_book_rebuilt_with_an_order_off_its_grid_cancels_it_and_goes_on(
    make_instrument, make_account
):
    market = make_instrument()
    account = make_account(funds={market.quote: "100"})
    old = buy(account, market, "old", "1", "10.03")
    Matcher().run_batch(_places(old))
    assert Order.objects.get(pk=old.pk).status == Order.Status.NEW
    Instrument.objects.filter(pk=market.pk).update(tick_size=D("0.05"))  # behind its back
    new = buy(account, market, "new", "1", "10.05")
    Matcher().run_batch(_places(new))  # a restarted matcher
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, old.reason, old.held) == ("canceled", RULES_CHANGED, 0)
    assert new.status == Order.Status.NEW
    assert ledger_verify() == []


@pytest.mark.django_db
def test_a_book_rebuilt_after_a_tick_change_off_its_last_price_matches(
    make_instrument, make_account
):
    market = make_instrument()
    buyer = make_account(funds={market.quote: "100"})
    seller = make_account(funds={market.base: "10"})
    first = [sell(seller, market, "s1", "1", "10.03"), buy(buyer, market, "b1", "1", "10.03")]
    Matcher().run_batch(_places(*first))
    assert Trade.objects.get(instrument=market).price == D("10.03")  # the last price
    instrument_status_set(symbol=market.symbol, status=Instrument.Status.HALTED)
    instrument_rules_change(symbol=market.symbol, tick_size="0.05")
    instrument_status_set(symbol=market.symbol, status=Instrument.Status.OPEN)
    then = [sell(seller, market, "s2", "1", "10.05"), buy(buyer, market, "b2", "1", "10.05")]
    # a matcher started now (after a crash, a deploy) rebuilds the book under tick 0.05
    Matcher().run_batch(_places(*then))
    assert [Order.objects.get(pk=o.pk).status for o in then] == ["filled", "filled"]
    assert ledger_verify() == []


@pytest.mark.django_db
def test_a_tick_change_cancels_what_raced_into_the_book(make_instrument, make_account):
    market = make_instrument()
    account = make_account(funds={market.quote: "100"})
    order = buy(account, market, "raced", "1", "10.03")
    matcher = Matcher()
    matcher.run_batch(
        [
            *_places(order),  # committed before the change, applied before it
            Command(RULES_CHANGE, market.symbol, 0, rules=_rules(market, tick_size="0.05")),
        ]
    )
    order.refresh_from_db()
    assert (order.status, order.reason, order.held) == ("canceled", RULES_CHANGED, 0)
    assert matcher.books[market.symbol].tick == D("0.05")
    assert ledger_verify() == []


# ---------------------------------------------------------------------------------------------
# The admin
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def boss(client):
    client.force_login(get_user_model().objects.create_superuser("boss", password="x"))  # noqa: S106
    return client


def _change_url(market: Instrument) -> str:
    return f"/admin/trading/instrument/{market.pk}/change/"


@pytest.mark.django_db
def test_the_change_form_shows_rules_and_a_used_instruments_assets_read_only(
    boss, make_instrument, make_account, make_asset
):
    market = make_instrument()
    fields = boss.get(_change_url(market)).context["adminform"].form.fields
    assert {"base", "quote"} <= set(fields)  # unused: may be corrected
    assert not set(Instrument.RULES) & set(fields)  # rules: through the rules page only
    buy(make_account(funds={market.quote: "100"}), market, "b", "1", "10.00")
    page = boss.get(_change_url(market))
    fields = page.context["adminform"].form.fields
    assert not {"base", "quote"} & set(fields)
    assert f"/admin/trading/instrument/{market.pk}/rules/" in page.content.decode()
    euro = make_asset("EUR", 2)
    response = boss.post(
        _change_url(market),
        {
            "symbol": market.symbol,
            "name": "Renamed",
            "base": euro.pk,
            "quote": euro.pk,
            "tick_size": "0.05",
            "maker_fee_rate": "0.5",
            "settlement_days": "2",
        },
    )
    assert response.status_code == 302
    market.refresh_from_db()
    assert (market.name, market.settlement_days) == ("Renamed", 2)  # not a trading rule
    assert (market.quote.code, market.tick_size, market.maker_fee_rate) == (
        "USD",
        D("0.01"),
        D("0.001"),
    )


@pytest.mark.django_db
def test_the_add_form_still_creates_instruments(boss, make_asset):
    data = {
        "symbol": "NEWX",
        "name": "New",
        "base": make_asset("NEWX", 0).pk,
        "quote": make_asset("USD", 2).pk,
        "tick_size": "0.01",
        "lot_size": "1",
        "min_quantity": "0",
        "max_quantity": "",
        "price_band_pct": "10",
        "maker_fee_rate": "0.001",
        "taker_fee_rate": "0.002",
        "settlement_days": "0",
    }
    assert boss.post("/admin/trading/instrument/add/", data).status_code == 302
    created = Instrument.objects.get(symbol="NEWX")
    assert (created.taker_fee_rate, created.settlement_days) == (D("0.002"), 0)


@pytest.mark.django_db
def test_the_rules_page_changes_rules_through_the_service(boss, make_instrument):
    market = make_instrument()
    url = f"/admin/trading/instrument/{market.pk}/rules/"
    page = boss.get(url)
    assert page.status_code == 200
    form = page.context["form"]
    data = {name: form[name].value() for name in Instrument.RULES}
    data = {name: "" if value is None else value for name, value in data.items()}
    # the grid of an open instrument: refused with the service's words, nothing changed
    refused = boss.post(url, data | {"tick_size": "0.05"})
    assert refused.status_code == 200
    assert "halt it" in refused.content.decode()
    assert Instrument.objects.get(pk=market.pk).tick_size == D("0.01")
    # a bad value: a field error
    bad = boss.post(url, data | {"taker_fee_rate": "0.5", "min_quantity": "5", "max_quantity": "2"})
    assert "max_quantity is below min_quantity" in bad.content.decode()
    # fees: changed, with the command for the matcher
    done = boss.post(url, data | {"taker_fee_rate": "0.003"}, follow=True)
    assert done.redirect_chain[-1][0] == _change_url(market)
    assert "trading rules changed for new orders" in done.content.decode()
    assert Instrument.objects.get(pk=market.pk).taker_fee_rate == D("0.003")
    [command] = rules_commands(market)
    assert command.data["changed_by"] == "boss"
    # the list's action leads to the same page
    chosen = boss.post(
        "/admin/trading/instrument/", {"action": "change_rules", "_selected_action": [market.pk]}
    )
    assert (chosen.status_code, chosen["Location"]) == (302, url)


# ---------------------------------------------------------------------------------------------
# End to end: relay and matcher as processes
# ---------------------------------------------------------------------------------------------


def _applied(market: Instrument, count: int) -> None:
    wait_for(
        lambda: (
            Outbox.objects.filter(
                key=market.symbol, type=RULES_CHANGE, applied_at__isnull=False
            ).count()
            == count
        ),
        what="the rules command applied",
    )


def _no_dead_letters(prefix: str) -> None:
    with override_settings(KAFKA_TOPIC_PREFIX=prefix):
        assert read_topic(kafka.DEAD_LETTER) == []


@pytest.mark.django_db(transaction=True)
def test_a_fee_change_applies_to_orders_placed_after_it_only(
    order_path, make_instrument, make_account
):
    market = make_instrument()  # maker 0.1 %, taker 0.2 %
    buyer = make_account(funds={market.quote: "1000"})
    seller = make_account(funds={market.base: "10"})
    resting = settled(buy(buyer, market, "before", "10", "20.00"))
    assert resting.held == D("200.40")  # 200.00 + the larger rate (0.2 %) of it
    instrument_rules_change(symbol=market.symbol, maker_fee_rate="0.005", taker_fee_rate="0.01")
    _applied(market, 1)
    taker = settled(sell(seller, market, "after", "10", "20.00"))
    resting.refresh_from_db()
    assert (taker.status, taker.reason) == ("filled", "")
    assert resting.status == Order.Status.FILLED
    # the resting buy pays the maker rate it was placed under (0.1 %), not the new 0.5 %,
    # which its hold could not have covered; the sell placed after pays the new taker 1 %
    assert (resting.fees, taker.fees) == (D("0.20"), D("2.00"))
    trade = Trade.objects.get(instrument=market)
    assert (trade.buyer_fee, trade.seller_fee) == (D("0.20"), D("2.00"))
    assert Balance.objects.get(account=buyer, asset=market.quote).available == D("799.80")
    assert Balance.objects.get(account=seller, asset=market.quote).pending == D("198.00")
    # an order placed now holds for the new rates
    later = settled(buy(buyer, market, "later", "10", "20.00"))
    assert (later.maker_fee_rate, later.taker_fee_rate, later.held) == (
        D("0.005"),
        D("0.01"),
        D("202.00"),
    )
    assert ledger_verify() == []
    _no_dead_letters(order_path)


@pytest.mark.django_db(transaction=True)
def test_the_matcher_keeps_matching_after_tick_changes(order_path, make_instrument, make_account):
    market = make_instrument()  # tick 0.01
    buyer = make_account(funds={market.quote: "1000"})
    seller = make_account(funds={market.base: "10"})

    def trade(name: str, quantity: str, price: str) -> None:
        settled(sell(seller, market, f"s-{name}", quantity, price))
        assert settled(buy(buyer, market, f"b-{name}", quantity, price)).status == "filled"

    def tick(size: str) -> None:
        instrument_status_set(symbol=market.symbol, status=Instrument.Status.HALTED)
        instrument_rules_change(symbol=market.symbol, tick_size=size)
        instrument_status_set(symbol=market.symbol, status=Instrument.Status.OPEN)

    trade("1", "1", "10.03")  # the last price, 10.03, is off the coarser grid below
    tick("0.05")
    _applied(market, 1)
    trade("2", "2", "10.05")
    tick("0.01")  # finer again: 10.02 is off the grid the matcher had before
    _applied(market, 2)
    trade("3", "1", "10.02")
    assert Trade.objects.filter(instrument=market).count() == 3
    assert not Order.objects.filter(instrument=market).exclude(status="filled").exists()
    assert ledger_verify() == []
    _no_dead_letters(order_path)


@pytest.mark.django_db
def test_a_replace_holds_at_the_orders_own_fee_rate(make_instrument, make_account):
    """A fee rise after the order was placed does not raise what its replace holds."""
    market = make_instrument()
    alice = make_account(funds={market.quote: "1000"})
    order = buy(alice, market, "r1", "1", "10.00")
    assert order.held == D("10.02")  # 10.00 and the 0.2 % taker fee
    Order.objects.filter(pk=order.pk).update(status=Order.Status.NEW)  # the matcher took it
    instrument_rules_change(symbol=market.symbol, taker_fee_rate="0.01")
    order_replace(account=alice, order_id=order.pk, quantity="2", price="10.00")
    order.refresh_from_db()
    assert order.held_for_replace == D("10.02")  # not 10.18 at the new 1 %
