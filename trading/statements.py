"""Daily statements: an account's trading day as the ledger and its trades recorded it.

`statement_build(account_id=, date=)` reads trading day `date` (its bounds from
TRADING_DAY_END_UTC, `trading.business_days.day_bounds`): the opening and closing balance of
each asset, bucket by bucket, from the postings (`accounts.selectors.account_statement`); the
account's trades of the day; its fees per asset; and its realised P&L per instrument, exact:
its fills of each instrument replayed through `position_after` (the matcher's one rule) up to
the day's start and up to its end, the difference being the day's. Amounts are decimal strings.

`statements_store(date=)` stores one `DailyStatement` per customer account that had a balance
or activity, once the day has ended; a statement already stored is kept as it is.
`statement_csv` and `statement_pdf` render one.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Account, Balance
from accounts.selectors import Buckets, account_statement
from trading import business_days
from trading.matching.positions import position_after
from trading.models import DailyStatement, Instrument, Order, Trade
from trading.units import quantum

ZERO = Decimal(0)
STATEMENT_VERSION = 1
BUCKET_NAMES = ("available", "held", "pending", "total")


class StatementError(Exception):
    """A statement was asked of an account or a day that has none; nothing was written."""


def _fixed(amount: Decimal, places: int) -> str:
    """`amount` at `places` decimals when that is exact, otherwise all its digits."""
    quantized = amount.quantize(quantum(places))
    return format(quantized if quantized == amount else amount.normalize(), "f")


def _exact(amount: Decimal) -> str:
    """Every significant digit of `amount`, never in exponent form."""
    return format(amount.normalize(), "f") if amount else "0"


def _buckets(buckets: Buckets, places: int) -> dict[str, str]:
    return {name: _fixed(getattr(buckets, name), places) for name in BUCKET_NAMES}


def statement_build(*, account_id: int, date: datetime.date) -> dict[str, Any]:
    """Return the statement of the account's trading day `date` (JSON-ready, decimal strings).

    Raises StatementError for an account that does not exist or is not a customer's.
    """
    account = Account.objects.select_related("user").filter(pk=account_id).first()
    if account is None or account.kind != Account.Kind.CUSTOMER:
        raise StatementError(f"no customer account #{account_id}")
    start, end = business_days.day_bounds(date)
    ledger = account_statement(account=account, start=start, end=end)
    balances = [
        {
            "asset": asset.asset.code,
            "opening": _buckets(asset.opening, asset.asset.precision),
            "closing": _buckets(asset.closing, asset.asset.precision),
            "postings": len(asset.lines),
        }
        for asset in ledger.assets
    ]

    day_trades = list(
        Trade.objects.filter(Q(buyer_id=account_id) | Q(seller_id=account_id))
        .filter(executed_at__gte=start, executed_at__lt=end)
        .select_related("instrument__base", "instrument__quote")
        .order_by("executed_at", "instrument_id", "seq")
    )
    trades = []
    fees: dict[str, Decimal] = defaultdict(Decimal)
    fee_places: dict[str, int] = {}
    instruments: dict[int, Instrument] = {}
    for trade in day_trades:
        instrument = trade.instrument
        instruments[instrument.pk] = instrument
        buys = trade.buyer_id == account_id
        fee = trade.buyer_fee if buys else trade.seller_fee
        quote = instrument.quote
        fees[quote.code] += fee
        fee_places[quote.code] = quote.precision
        # The aggressor is the taker: the account made liquidity when it was the other side.
        side = Order.Side.BUY if buys else Order.Side.SELL
        trades.append(
            {
                "executed_at": trade.executed_at.astimezone(datetime.UTC).isoformat(),
                "symbol": instrument.symbol,
                "seq": trade.seq,
                "side": str(side),
                "quantity": _fixed(trade.quantity, instrument.base.precision),
                "price": format(trade.price.quantize(instrument.tick_size.normalize()), "f"),
                "quote_amount": _fixed(trade.quote_amount, quote.precision),
                "fee": _fixed(fee, quote.precision),
                "fee_asset": quote.code,
                "liquidity": "taker" if trade.aggressor_side == side else "maker",
            }
        )
    realized = [
        {
            "symbol": instrument.symbol,
            "asset": instrument.quote.code,
            "amount": _exact(_realized_in_day(account_id, instrument, start, end)),
        }
        for instrument in sorted(instruments.values(), key=lambda listed: listed.symbol)
    ]
    return {
        "version": STATEMENT_VERSION,
        "account_id": account_id,
        "username": account.user.get_username() if account.user else "",
        "date": date.isoformat(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "balances": balances,
        "trades": trades,
        "trade_count": len(trades),
        "fees": [
            {"asset": code, "amount": _fixed(amount, fee_places[code])}
            for code, amount in sorted(fees.items())
        ],
        "realized_pnl": realized,
    }


def _realized_in_day(
    account_id: int, instrument: Instrument, start: datetime.datetime, end: datetime.datetime
) -> Decimal:
    """The realised P&L of the account's fills of `instrument` in [start, end): its fills up to
    the end replayed in the matcher's order (trade number), less the part before the start."""
    quantity = average = realized = ZERO
    before = ZERO
    fills = (
        Trade.objects.filter(instrument=instrument, executed_at__lt=end)
        .filter(Q(buyer_id=account_id) | Q(seller_id=account_id))
        .order_by("seq")
        .values_list("buyer_id", "quantity", "price", "executed_at")
    )
    for buyer_id, filled, price, executed_at in fills:
        change = filled if buyer_id == account_id else -filled
        quantity, average, realized = position_after(quantity, average, realized, change, price)
        if executed_at < start:
            before = realized
    return realized - before


def statement_has_content(data: dict[str, Any]) -> bool:
    """Whether a statement shows anything: a balance at either end, a posting or a trade."""
    if data["trades"]:
        return True
    for balance in data["balances"]:
        if balance["postings"]:
            return True
        for moment in ("opening", "closing"):
            if any(Decimal(value) for value in balance[moment].values()):
                return True
    return False


@dataclass(frozen=True, slots=True)
class StatementsSummary:
    date: datetime.date
    stored: int  # statements written by this call
    kept: int  # statements that were stored already (left as they are)
    empty: int  # accounts with neither a balance nor activity that day (none stored)

    def as_dict(self) -> dict[str, object]:
        return {
            "date": self.date.isoformat(),
            "stored": self.stored,
            "kept": self.kept,
            "empty": self.empty,
        }


def statements_store(
    *,
    date: datetime.date,
    progress: Callable[[int, int], None] | None = None,
) -> StatementsSummary:
    """Store the statement of trading day `date` of every customer account that had a balance
    or activity; a statement already stored is kept. `progress(done, total)` after each account.

    Raises StatementError when the day has not ended yet (its statement would be incomplete).
    """
    if not isinstance(date, datetime.date) or isinstance(date, datetime.datetime):
        raise StatementError(f"a statement's day is a date, not {date!r}")
    _, end = business_days.day_bounds(date)
    if end > timezone.now():
        raise StatementError(
            f"trading day {date.isoformat()} ends at {end.isoformat()}: its statements are "
            "stored once it has ended"
        )
    # An account that ever had a posting has a balance row; one that never did has nothing.
    candidates = sorted(
        set(
            Balance.objects.filter(account_kind=Account.Kind.CUSTOMER).values_list(
                "account_id", flat=True
            )
        )
    )
    existing = set(
        DailyStatement.objects.filter(date=date, account_id__in=candidates).values_list(
            "account_id", flat=True
        )
    )
    stored = empty = 0
    for done, account_id in enumerate(candidates, start=1):
        if account_id not in existing:
            data = statement_build(account_id=account_id, date=date)
            if not statement_has_content(data):
                empty += 1
            else:
                # Stored meanwhile by another run: that one stays.
                _, created = DailyStatement.objects.get_or_create(
                    account_id=account_id, date=date, defaults={"data": data}
                )
                stored += created
        if progress is not None:
            progress(done, len(candidates))
    return StatementsSummary(date=date, stored=stored, kept=len(existing), empty=empty)


def statement_list(*, account_id: int) -> QuerySet[DailyStatement]:
    """The account's stored statements, newest first (without their data)."""
    return DailyStatement.objects.filter(account_id=account_id).defer("data").order_by("-date")


def statement_get(*, account_id: int, date: datetime.date) -> DailyStatement | None:
    """The account's stored statement of `date`, or None."""
    return DailyStatement.objects.filter(account_id=account_id, date=date).first()


# ---------------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------------

BALANCE_COLUMNS = [
    f"{moment} {bucket}" for moment in ("opening", "closing") for bucket in BUCKET_NAMES
]
TRADE_COLUMNS = [
    "time (UTC)",
    "symbol",
    "trade",
    "side",
    "quantity",
    "price",
    "quote amount",
    "fee",
    "fee asset",
    "liquidity",
]


def _plain_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@") else value


def _trade_row(trade: dict[str, Any]) -> list[str]:
    return [
        trade["executed_at"],
        trade["symbol"],
        str(trade["seq"]),
        trade["side"],
        trade["quantity"],
        trade["price"],
        trade["quote_amount"],
        trade["fee"],
        trade["fee_asset"],
        trade["liquidity"],
    ]


def _balance_row(balance: dict[str, Any]) -> list[str]:
    return [
        balance["asset"],
        *(balance[moment][bucket] for moment in ("opening", "closing") for bucket in BUCKET_NAMES),
    ]


def statement_csv(data: dict[str, Any]) -> str:
    """The statement as CSV: a header, then balances, trades, fees and realised P&L."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["Tredye daily statement"])
    writer.writerow(["account", data["account_id"], _plain_text(data["username"])])
    writer.writerow(["trading day", data["date"], "from", data["start"], "to", data["end"]])
    writer.writerow([])
    writer.writerow(["balances"])
    writer.writerow(["asset", *BALANCE_COLUMNS])
    writer.writerows(_balance_row(balance) for balance in data["balances"])
    writer.writerow([])
    writer.writerow(["trades", data["trade_count"]])
    writer.writerow(TRADE_COLUMNS)
    writer.writerows(_trade_row(trade) for trade in data["trades"])
    writer.writerow([])
    writer.writerow(["fees"])
    writer.writerow(["asset", "amount"])
    writer.writerows([fee["asset"], fee["amount"]] for fee in data["fees"])
    writer.writerow([])
    writer.writerow(["realised P&L"])
    writer.writerow(["symbol", "asset", "amount"])
    writer.writerows([row["symbol"], row["asset"], row["amount"]] for row in data["realized_pnl"])
    return out.getvalue()


def _latin1(text: object) -> str:
    """PDF core fonts know Latin-1 only: anything else shows as '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def statement_pdf(data: dict[str, Any]) -> bytes:
    """The statement as a PDF (fpdf2, core fonts): the same sections as the CSV."""
    from fpdf import FPDF  # imported here: only the download view renders PDFs

    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_title(_latin1(f"Tredye statement {data['date']}"))
    pdf.set_creator("Tredye")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, "Tredye daily statement", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    for line in (
        f"Account #{data['account_id']} ({data['username']})",
        f"Trading day {data['date']}: {data['start']} to {data['end']} (UTC)",
    ):
        pdf.cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")

    def section(title: str, header: list[str], rows: list[list[str]]) -> None:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, _latin1(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=7)
        if not rows:
            pdf.cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
            return
        with pdf.table(text_align="LEFT", line_height=4.5, first_row_as_headings=True) as table:
            for values in [header, *rows]:
                row = table.row()
                for value in values:
                    row.cell(_latin1(value))

    section("Balances", ["asset", *BALANCE_COLUMNS], [_balance_row(b) for b in data["balances"]])
    section(
        f"Trades ({data['trade_count']})", TRADE_COLUMNS, [_trade_row(t) for t in data["trades"]]
    )
    section("Fees", ["asset", "amount"], [[fee["asset"], fee["amount"]] for fee in data["fees"]])
    section(
        "Realised P&L",
        ["symbol", "asset", "amount"],
        [[row["symbol"], row["asset"], row["amount"]] for row in data["realized_pnl"]],
    )
    return bytes(pdf.output())
