"""The demo market: assets, instruments with realistic prices, and the demo users."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from accounts import services as ledger
from accounts.models import Asset, IdempotencyKey
from marketdata.models import PriceModel
from trading.models import Instrument

D = Decimal

ASSETS = [
    ("USD", "US dollar", 2),
    ("AAPL", "Apple Inc.", 0),
    ("MSFT", "Microsoft Corp.", 0),
    ("NVDA", "NVIDIA Corp.", 0),
    ("AMZN", "Amazon.com Inc.", 0),
    ("GOOGL", "Alphabet Inc. Class A", 0),
    ("TSLA", "Tesla Inc.", 0),
    ("SPY", "SPDR S&P 500 ETF", 0),
    ("BTC", "Bitcoin", 8),
    ("ETH", "Ether", 8),
    ("SOL", "Solana", 8),
]

# symbol, base, quote, tick, lot, initial price, annual volatility, spread bps, typical size
INSTRUMENTS = [
    ("AAPL", "AAPL", "USD", D("0.01"), D("1"), D("229.87"), D("0.25"), 2, D("300")),
    ("MSFT", "MSFT", "USD", D("0.01"), D("1"), D("417.12"), D("0.22"), 2, D("200")),
    ("NVDA", "NVDA", "USD", D("0.01"), D("1"), D("138.45"), D("0.50"), 3, D("800")),
    ("AMZN", "AMZN", "USD", D("0.01"), D("1"), D("201.20"), D("0.30"), 3, D("300")),
    ("GOOGL", "GOOGL", "USD", D("0.01"), D("1"), D("178.35"), D("0.28"), 3, D("300")),
    ("TSLA", "TSLA", "USD", D("0.01"), D("1"), D("342.10"), D("0.60"), 4, D("250")),
    ("SPY", "SPY", "USD", D("0.01"), D("1"), D("592.64"), D("0.15"), 1, D("500")),
    ("BTC-USD", "BTC", "USD", D("0.01"), D("0.0001"), D("97250.00"), D("0.55"), 2, D("0.5")),
    ("ETH-USD", "ETH", "USD", D("0.01"), D("0.001"), D("3420.50"), D("0.65"), 3, D("5")),
    ("SOL-USD", "SOL", "USD", D("0.001"), D("0.01"), D("238.420"), D("0.80"), 5, D("50")),
]

# Trading rules: (min size, max size) per order in base units, price band in % of the
# reference (stocks 10 %, crypto 20 %), and fee rates on the quote amount of each fill.
STOCK_BAND, CRYPTO_BAND = D("10"), D("20")
MAKER_FEE_RATE, TAKER_FEE_RATE = D("0.0010"), D("0.0020")
SIZE_LIMITS = {
    "AAPL": (D("1"), D("10000")),
    "MSFT": (D("1"), D("10000")),
    "NVDA": (D("1"), D("20000")),
    "AMZN": (D("1"), D("10000")),
    "GOOGL": (D("1"), D("10000")),
    "TSLA": (D("1"), D("10000")),
    "SPY": (D("1"), D("25000")),
    "BTC-USD": (D("0.0001"), D("10")),
    "ETH-USD": (D("0.001"), D("250")),
    "SOL-USD": (D("0.01"), D("5000")),
}
CRYPTO = {"BTC-USD", "ETH-USD", "SOL-USD"}

DEMO_TRADER = "demo"
# Quotes every instrument (manage.py run_market_maker); it never logs in.
MARKET_MAKER = "market-maker"

# Money each demo account starts with, deposited through the ledger (never inserted directly).
DEMO_TRADER_FUNDING = [("USD", D("100000.00")), ("AAPL", D("50")), ("BTC", D("0.5"))]
# The market maker holds enough of every base asset for a thousand typical quotes.
MARKET_MAKER_FUNDING = [("USD", D("50000000.00"))] + [
    (base, size * 1000) for _, base, quote, *_, size in INSTRUMENTS if base != quote
]


@transaction.atomic(durable=True)
def demo_load(*, trader_password: str, admin_password: str) -> dict[str, int]:
    """Create what is missing of the demo market; running it twice changes nothing more."""
    created = {"assets": 0, "instruments": 0, "users": 0}
    assets = {}
    for code, name, precision in ASSETS:
        assets[code], was_created = Asset.objects.get_or_create(
            code=code, defaults={"name": name, "precision": precision}
        )
        created["assets"] += was_created
    for symbol, base, quote, tick, lot, price, vol, spread, size in INSTRUMENTS:
        instrument, was_created = Instrument.objects.get_or_create(
            symbol=symbol,
            defaults={
                "name": assets[base].name if quote == "USD" and base != "USD" else symbol,
                "base": assets[base],
                "quote": assets[quote],
                "tick_size": tick,
                "lot_size": lot,
                "min_quantity": SIZE_LIMITS[symbol][0],
                "max_quantity": SIZE_LIMITS[symbol][1],
                "price_band_pct": CRYPTO_BAND if symbol in CRYPTO else STOCK_BAND,
                "maker_fee_rate": MAKER_FEE_RATE,
                "taker_fee_rate": TAKER_FEE_RATE,
                # Crypto settles the same day, stocks the next business day.
                "settlement_days": 0 if symbol in CRYPTO else 1,
            },
        )
        created["instruments"] += was_created
        PriceModel.objects.get_or_create(
            instrument=instrument,
            defaults={
                "initial_price": price,
                "annual_volatility": vol,
                "spread_bps": spread,
                "typical_size": size,
            },
        )
    users = get_user_model().objects
    if not users.filter(username=DEMO_TRADER).exists():
        users.create_user(DEMO_TRADER, email="demo@tredye.test", password=trader_password)
        created["users"] += 1
    if not users.filter(username="admin").exists():
        users.create_superuser("admin", email="admin@tredye.test", password=admin_password)
        created["users"] += 1
    if not users.filter(username=MARKET_MAKER).exists():
        users.create_user(MARKET_MAKER, email="market-maker@tredye.test", password=None)
        created["users"] += 1
    for username in (DEMO_TRADER, MARKET_MAKER, "admin"):
        ledger.account_open(user=users.get(username=username))
    return created


def demo_fund() -> int:
    """Deposit the demo trader's and market maker's starting money; return deposits made now.

    Each deposit has a fixed idempotency key, so running it again deposits nothing more.
    """
    made = 0
    users = get_user_model().objects
    for username, funding in (
        (DEMO_TRADER, DEMO_TRADER_FUNDING),
        (MARKET_MAKER, MARKET_MAKER_FUNDING),
    ):
        account = ledger.account_open(user=users.get(username=username))
        for code, amount in funding:
            key = f"demo-funding:{username}:{code}"
            made += not IdempotencyKey.objects.filter(key=key).exists()
            ledger.deposit(
                account=account,
                asset=code,
                amount=amount,
                reference="demo funding",
                idempotency_key=key,
            )
    return made
