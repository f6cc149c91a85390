"""The SQL of order placement: two prepared statements instead of a dozen ORM queries.

`order_place` is the hot path of the venue (docs/decisions/0005-order-placement-sql.md and
0008-order-path-round-trips.md). It runs at most two statements:

1. `placement_read` reads the account's kind and status, the instrument's rules and status,
   its assets' precision, the band's reference price and the id of an order that already uses
   the client order id. It locks nothing: what the order depends on is checked again by 2.
   A priced order whose instrument this process has read before skips it (`cached_instrument`).
2. `placement_write` is one statement, so one durable transaction of its own (autocommit; no
   BEGIN or COMMIT round trip). Its CTEs lock the account row (FOR NO KEY UPDATE, the same
   lock as `accounts_lock`) if it is still a customer account that is not frozen, check that
   the instrument is still open under the rules `order_place` validated against and that the
   order's price is inside the band around the reference price of the moment, move the hold
   from `available` to `held` on the balance row — only if enough is available — and, only
   then, insert the order, the hold's journal entry and its two postings, and the outbox row.

The hold is exactly the entry `ledger_post` would write (kind hold, reference "order N",
available → held of one asset), so PostgreSQL's ledger triggers (entries balance, postings
within the asset's precision, append-only) and `ledger_check` hold it to the same rules.
Statements are sent with server-side binding and prepared once per connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from accounts.models import Account, Asset
from trading import sql
from trading.models import Instrument, Order
from trading.rules import fee_rates, references_admitting
from tredye.db import instance_from_values, prepared_cursor

# Every column's default, for `new_order` (timestamps are always given).
_ORDER_DEFAULTS = {
    f.attname: None if f.has_default() and callable(f.default) else f.get_default()
    for f in Order._meta.concrete_fields
}


def new_order(*, account: Account, instrument: Instrument, **values: Any) -> Order:
    """An unsaved Order, as `Order(account=..., instrument=..., **values)` makes it, without
    Django's field-by-field `__init__` (a fifth of `order_place`'s Python; see
    `tredye.db.instance_from_values`). A test checks it equals the row it becomes.

    The order records the instrument's fee rates as validated (the rules version
    `placement_write` checks keeps them in force): its hold covers them and its fills pay
    them, whatever the rates become later (docs/decisions/0010-reference-data.md).
    """
    order = instance_from_values(
        Order,
        _ORDER_DEFAULTS
        | fee_rates(instrument)
        | values
        | {"account_id": account.pk, "instrument_id": instrument.pk},
        related={"account": account, "instrument": instrument},
    )
    order._state.adding = True
    return order


@dataclass(slots=True)
class Placement:
    """What the locked read returned: the account's state and the instrument's rules."""

    account_kind: str
    account_status: str
    instrument: Instrument
    reference: Decimal | None
    existing_order_id: int | None


_cursor = prepared_cursor


def placement_read(*, account_id: int, symbol: str, client_order_id: str) -> Placement | None:
    """Read what placing needs (locking nothing); None if the account or symbol is unknown."""
    cursor = _cursor()
    cursor.execute(
        sql.PLACEMENT_READ,
        {"account_id": account_id, "symbol": symbol, "client_order_id": client_order_id},
        prepare=True,
    )
    row = cursor.fetchone()
    if row is None:
        return None
    kind, status = row[:2]
    reference, existing = row[19:]
    return Placement(kind, status, _instrument(symbol, row[2:19]), reference, existing)


# symbol -> (the instrument's columns as last read, the Instrument built from them)
_INSTRUMENTS: dict[str, tuple[tuple, Instrument]] = {}


def cached_instrument(symbol: str) -> Instrument | None:
    """The instrument as this process last read it (by `placement_read`), or None.

    Its rules may have changed since: `placement_write` checks them again.
    """
    cached = _INSTRUMENTS.get(symbol)
    return None if cached is None else cached[1]


def instrument_cache_clear() -> None:
    """Forget the instruments this process has read: the next priced order reads afresh."""
    _INSTRUMENTS.clear()


def _instrument(symbol: str, columns: tuple) -> Instrument:
    """The instrument with these columns: the one built last time if they have not changed.

    Building an Instrument and its two Assets was a quarter of `order_place`'s Python. The
    columns are read on every call, so a halt or a new fee applies to the next order as before;
    only the objects are reused (they are not modified by anyone who gets them).
    """
    cached = _INSTRUMENTS.get(symbol)
    if cached is not None and cached[0] == columns:
        return cached[1]
    (instrument_id, name, instrument_status, tick, lot, min_quantity) = columns[:6]
    (max_quantity, band, maker_fee, taker_fee, rules_version) = columns[6:11]
    (base_id, base_code, base_precision, quote_id, quote_code, quote_precision) = columns[11:]
    instrument = Instrument(
        id=instrument_id,
        symbol=symbol,
        name=name,
        status=instrument_status,
        tick_size=tick,
        lot_size=lot,
        min_quantity=min_quantity,
        max_quantity=max_quantity,
        price_band_pct=band,
        maker_fee_rate=maker_fee,
        taker_fee_rate=taker_fee,
        rules_version=rules_version,
        base=Asset(id=base_id, code=base_code, precision=base_precision),
        quote=Asset(id=quote_id, code=quote_code, precision=quote_precision),
    )
    _INSTRUMENTS[symbol] = (columns, instrument)
    return instrument


# What refused a write that wrote nothing, in the order they are reported.
CLIENT_ORDER_ID, ACCOUNT, INSTRUMENT_STATUS, RULES_VERSION, BAND, FUNDS = (
    "client_order_id",  # the account already has an order with this client order id
    "account",  # no longer a customer account that may trade (frozen)
    "instrument_status",  # the instrument is no longer open (`instrument_status` says what)
    "rules_version",  # its rules changed since the order was checked against them
    "band",  # the price is outside the band around `reference`, the reference of this moment
    "funds",  # less than the hold available
)


@dataclass(slots=True)
class Written:
    """The order's id; or None and the guard that refused it, with what that guard saw."""

    order_id: int | None
    refused: str | None = None
    instrument_status: str | None = None
    reference: Decimal | None = None  # the reference price the band guard saw


def placement_write(
    *,
    order: Order,
    rules_version: int,
    asset_id: int,
    hold: Decimal,
    memo: str,
    topic: str,
    type: str,
    ts: int,  # noqa: A002
) -> Written:
    """Hold the funds and insert the order, its hold entry and outbox row, in one statement.

    Committed on return when the connection is in autocommit (the caller's transaction
    otherwise). Writes nothing, and says which guard refused, when the account already has an
    order with this client order id, is no longer a customer account that may trade, the
    instrument is no longer open or its rules are no longer `rules_version`, the order's price
    is outside the price band around the reference price at this moment, or the balance has
    less than `hold` available. Raises psycopg's UniqueViolation when a racing call committed
    an order with the same client order id after this statement began.
    """
    params: dict[str, Any] = {f.column: getattr(order, f.attname) for f in sql.ORDER_INSERT_FIELDS}
    price = order.price
    if price is None:  # a market order: no band to be inside (its protection price is set)
        admitting = (Decimal(0), sql.REFERENCE_TOP)
    else:
        admitting = references_admitting(
            order.instrument, price, quantum=sql.REFERENCE_QUANTUM, top=sql.REFERENCE_TOP
        )
    params |= {
        "reference_low": admitting[0],
        "reference_high": admitting[1],
        "rules_version": rules_version,
        "hold": hold,
        "asset_id": asset_id,
        "memo": memo,
        "outbox_topic": topic,
        "symbol": order.instrument.symbol,
        "outbox_type": type,
        "ts": ts,
    }
    cursor = _cursor()
    cursor.execute(sql.PLACEMENT_WRITE, params, prepare=True)
    order_id, seen = cursor.fetchone()
    if order_id is not None:
        return Written(order_id)
    # (no row at all: the instrument is gone, which PROTECT forbids; reported as not open)
    id_free, account_ok, status, version, reference = seen or (True, True, None, 0, None)
    reference = None if reference is None else Decimal(reference)
    if not id_free:
        return Written(None, CLIENT_ORDER_ID)
    if not account_ok:
        return Written(None, ACCOUNT)
    if status != Instrument.Status.OPEN:
        return Written(None, INSTRUMENT_STATUS, instrument_status=status)
    if version != rules_version:
        return Written(None, RULES_VERSION)
    if reference is not None and not admitting[0] <= reference <= admitting[1]:
        return Written(None, BAND, reference=reference)
    return Written(None, FUNDS)  # the one condition left: `available >= hold` on the balance


def order_id_for(*, account_id: int, client_order_id: str) -> int | None:
    """The id of the account's order with this client order id, if any."""
    cursor = _cursor()
    cursor.execute(sql.ORDER_BY_CLIENT_ORDER_ID, (account_id, client_order_id))
    row = cursor.fetchone()
    return None if row is None else row[0]


def reference_price_read(*, instrument_id: int) -> Decimal | None:
    """The instrument's reference price now (None without a feed's price or a trade)."""
    cursor = _cursor()
    cursor.execute(sql.REFERENCE_OF, (instrument_id,))
    row = cursor.fetchone()
    return None if row is None else row[0]


def available_balance(*, account_id: int, asset_id: int) -> Decimal:
    """The account's available balance of an asset (for the refusal's message)."""
    cursor = _cursor()
    cursor.execute(sql.AVAILABLE, (account_id, asset_id))
    row = cursor.fetchone()
    return Decimal(0) if row is None else row[0]
