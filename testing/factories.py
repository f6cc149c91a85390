"""Factories for every app's tests: plain functions with keyword arguments and sensible
defaults, each making one kind of row the way the application would.

The tests reach them through the root `conftest.py` fixtures of the same names (which also
grant database access), or import them from here.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import services as ledger
from accounts.models import Account, Asset
from marketdata.models import PriceModel
from testing.helpers import new_key
from trading.models import Instrument, Order, Outbox, Trade
from tredye import kafka

D = Decimal
# Assets the tests name, with the name and precision they have on the venue; any other code
# gets its own code as name and the precision asked for (2 by default).
ASSETS = {"USD": ("US dollar", 2), "BTC": ("Bitcoin", 8), "AAPL": ("Apple Inc.", 0)}
TEST_PASSWORD = "a-long-test-password"  # noqa: S105 - test users only
_numbers = itertools.count(1)


def make_asset(code: str = "USD", precision: int | None = None) -> Asset:
    """The asset `code`, created on first use (an existing one is returned as it is)."""
    name, default_precision = ASSETS.get(code, (code, 2))
    asset, _ = Asset.objects.get_or_create(
        code=code,
        defaults={"name": name, "precision": default_precision if precision is None else precision},
    )
    return asset


def make_account(username: str | None = None, *, funds: dict[Asset, str] | None = None) -> Account:
    """A user (password `TEST_PASSWORD`) with a trading account opened through the ledger
    service; `funds` ({asset: amount}) are deposited through the deposit service."""
    name = username or f"trader{next(_numbers)}-{uuid.uuid4().hex[:6]}"
    user = get_user_model().objects.create_user(name, password=TEST_PASSWORD)
    account = ledger.account_open(user=user)
    for asset, amount in (funds or {}).items():
        ledger.deposit(
            account=account,
            asset=asset,
            amount=D(amount),
            reference="test funding",
            idempotency_key=new_key(),
        )
    return account


def make_instrument(
    symbol: str | None = None,
    *,
    price: str | None = None,
    tick: str = "0.01",
    lot: str = "1",
    **fields: object,
) -> Instrument:
    """An instrument quoted in USD: tick 0.01, lot 1, maker fee 0.1 %, taker fee 0.2 %, open.

    `symbol` defaults to a fresh one, so each call is its own market; the base asset is the
    symbol's part before any "-" (precision 0 unless `ASSETS` says otherwise). `price` also
    gives it a price model starting at that price (what the feed simulates); without it, the
    instrument has none. Other model fields (`status`, `price_band_pct`, `base`…) go through
    `fields`.
    """
    if symbol is None:
        symbol = f"T{uuid.uuid4().hex[:5].upper()}{next(_numbers)}"
    defaults = {
        "symbol": symbol,
        "name": f"{symbol} test",
        "tick_size": D(tick),
        "lot_size": D(lot),
        "maker_fee_rate": D("0.001"),
        "taker_fee_rate": D("0.002"),
    }
    if "base" not in fields:
        defaults["base"] = make_asset(symbol.split("-")[0], 0)
    if "quote" not in fields:
        defaults["quote"] = make_asset("USD")
    listed = Instrument.objects.create(**(defaults | fields))
    if price is not None:
        make_price_model(listed, price=price, typical_size=str(D("100") * listed.lot_size))
    return listed


def make_price_model(
    instrument: Instrument,
    *,
    price: str = "200.00",
    volatility: str = "0.30",
    spread_bps: int = 4,
    typical_size: str = "100",
) -> PriceModel:
    """The simulated price model of `instrument`, starting at `price`."""
    return PriceModel.objects.create(
        instrument=instrument,
        initial_price=D(price),
        annual_volatility=D(volatility),
        spread_bps=spread_bps,
        typical_size=D(typical_size),
    )


def make_queued_command(age_s: float = 30.0) -> Outbox:
    """An order command accepted `age_s` ago that no matcher has applied (a stalled path)."""
    return Outbox.objects.create(
        topic=kafka.ORDERS,
        key="AAPL",
        type="order.place",
        seq=0,
        ts=0,
        data={"order_id": 1},
        created_at=timezone.now() - datetime.timedelta(seconds=age_s),
    )


def make_trades(
    instrument: Instrument, trades: list[tuple[int, str, str, datetime.datetime]]
) -> list[Trade]:
    """Trade rows of `instrument`, each (seq, price, quantity, executed_at), between two fresh
    accounts' orders: rows only, without fills booked in the ledger, for what reads trades
    (candles), not for ledger checks."""
    buyer, seller = make_account(), make_account()

    def order(account: Account, side: str) -> Order:
        return Order.objects.create(
            account=account,
            instrument=instrument,
            client_order_id=uuid.uuid4().hex,
            side=side,
            type=Order.Type.LIMIT,
            time_in_force=Order.TimeInForce.GTC,
            quantity=D("1"),
            price=D("1"),
            status=Order.Status.CANCELED,
            maker_fee_rate=instrument.maker_fee_rate,
            taker_fee_rate=instrument.taker_fee_rate,
        )

    maker, taker = order(seller, Order.Side.SELL), order(buyer, Order.Side.BUY)
    return Trade.objects.bulk_create(
        Trade(
            instrument=instrument,
            seq=seq,
            maker_order=maker,
            taker_order=taker,
            buyer=buyer,
            seller=seller,
            price=D(price),
            quantity=D(quantity),
            quote_amount=D(price) * D(quantity),
            aggressor_side=Order.Side.BUY,
            executed_at=executed_at,
            settlement_date=executed_at.date(),
        )
        for seq, price, quantity, executed_at in trades
    )
