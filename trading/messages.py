"""The JSON shapes of orders, trades and events as the topics and the JSON endpoints show them.

Views, the matcher and the streams share them, so a field is added in one place. Each function
builds one shape from values already at hand; none reads the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from trading.models import Order, Position, Trade
from trading.units import plain
from tredye import kafka

# The topics the matcher's events go on (its outbox rows; the relay sends any it left behind).
EVENT_TOPICS = (kafka.TRADES, kafka.BOOK, kafka.ACCOUNT_EVENTS)

# The `type` of each event on the topics (an outbox row's, and the envelope's on the wire).
TRADE = "trade"
BOOK_DELTA = "book.delta"
ACCOUNT_ORDERS = "account.orders"

# Epoch milliseconds in integers, not through a float timestamp (which can be 1 ms off).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def order_message(order: Order) -> dict[str, Any]:
    """An order as the account-events topic and the JSON endpoints show it."""
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "symbol": order.instrument.symbol if "instrument" in order._state.fields_cache else None,
        "instrument_id": order.instrument_id,
        "side": order.side,
        "type": order.type,
        "time_in_force": order.time_in_force,
        "post_only": order.post_only,
        "quantity": plain(order.quantity),
        "price": plain(order.price),
        "stop_price": plain(order.stop_price),
        "status": order.status,
        "reason": order.reason,
        "filled_quantity": plain(order.filled_quantity),
        "average_price": plain(order.average_price),
        "fees": plain(order.fees),
        "held": plain(order.held),
    }


def trade_message(
    *,
    symbol: str,
    seq: int,
    price: Decimal,
    quantity: Decimal,
    aggressor: str,
    maker_order_id: int,
    taker_order_id: int,
    ts: int,
) -> dict[str, Any]:
    """A trade as the trades topic shows it: `aggressor` is the side of the incoming order
    ("buy" or "sell"), `seq` the instrument's trade number, `ts` the engine's time (ms)."""
    return {
        "symbol": symbol,
        "seq": seq,
        "price": plain(price),
        "quantity": plain(quantity),
        "aggressor": aggressor,
        "maker_order_id": maker_order_id,
        "taker_order_id": taker_order_id,
        "ts": ts,
    }


def account_trade_message(trade: dict[str, Any], *, side: str, fee: Decimal) -> dict[str, Any]:
    """A trade (`trade_message`) as one of its two accounts sees it: its side and its fee."""
    return trade | {"side": side, "fee": plain(fee)}


def book_delta_message(
    symbol: str, levels: Mapping[tuple[int, Decimal], Decimal]
) -> dict[str, Any]:
    """The levels of a book that changed, as the book topic shows them.

    `levels` maps (side, price) to the quantity now at that price: side 1 a bid, -1 an ask (the
    engine's `Side`), quantity 0 a level that is gone. Bids come best (highest) first, asks
    best (lowest) first, each as [price, quantity].
    """
    bids = sorted(((p, q) for (s, p), q in levels.items() if s == 1), key=lambda level: -level[0])
    asks = sorted(((p, q) for (s, p), q in levels.items() if s == -1), key=lambda level: level[0])
    return {
        "symbol": symbol,
        "bids": [[plain(p), plain(q)] for p, q in bids],
        "asks": [[plain(p), plain(q)] for p, q in asks],
    }


def account_orders_message(
    account_id: int, orders: Iterable[Order], trades: list[dict[str, Any]]
) -> dict[str, Any]:
    """An account's orders that changed and its trades (`account_trade_message`), as the
    account-events topic shows them."""
    return {
        "account_id": account_id,
        "orders": [order_message(order) for order in orders],
        "trades": trades,
    }


def account_fill_message(trade: Trade, *, account_id: int) -> dict[str, Any]:
    """A trade as one of its accounts sees it on the trades endpoint: that account's order
    (maker or taker side, whichever is its own), side, liquidity and fee (in the quote asset).

    The trade must come with its instrument and quote asset and both orders loaded
    (`selectors.trade_list`). A trade never has one account on both sides (self-trade
    prevention, and the `trade_not_with_itself` constraint), so the account's side is one.
    """
    maker = trade.maker_order.account_id == account_id
    order = trade.maker_order if maker else trade.taker_order
    buyer = trade.buyer_id == account_id
    executed = trade.executed_at
    return {
        "id": trade.pk,
        "symbol": trade.instrument.symbol,
        "seq": trade.seq,
        "order_id": order.pk,
        "client_order_id": order.client_order_id,
        "side": "buy" if buyer else "sell",
        "liquidity": "maker" if maker else "taker",
        "price": plain(trade.price),
        "quantity": plain(trade.quantity),
        "quote_amount": plain(trade.quote_amount),
        "fee": plain(trade.buyer_fee if buyer else trade.seller_fee),
        "fee_asset": trade.instrument.quote.code,
        "executed_at": executed.isoformat(),
        "executed_at_ms": (executed - EPOCH) // MILLISECOND,
    }


def epoch_ms(moment: datetime) -> int:
    """An aware time in epoch milliseconds (exact, integer)."""
    return (moment - EPOCH) // MILLISECOND


def book_snapshot_message(
    *,
    symbol: str,
    seq: int,
    ts: int | None,
    bids: Iterable[tuple[Decimal, Decimal]],
    asks: Iterable[tuple[Decimal, Decimal]],
) -> dict[str, Any]:
    """A book's price levels as the book snapshot endpoint shows them: bids and asks already
    ordered best first, each as [price, quantity] like `book_delta_message`'s; `seq` the book
    state's `book_seq` and `ts` its time (epoch ms, None before the matcher touched the book)."""
    return {
        "symbol": symbol,
        "seq": seq,
        "ts": ts,
        "bids": [[plain(p), plain(q)] for p, q in bids],
        "asks": [[plain(p), plain(q)] for p, q in asks],
    }


def public_trade_message(trade: Trade) -> dict[str, Any]:
    """A trade row as the public tape shows it: `trade_message`'s public fields (its names,
    `ts` the time it executed in epoch ms), without orders or accounts."""
    return {
        "seq": trade.seq,
        "price": plain(trade.price),
        "quantity": plain(trade.quantity),
        "aggressor": trade.aggressor_side,
        "ts": epoch_ms(trade.executed_at),
    }


# What the public tape shows of a trade (`trade_message` without its orders; the `trades.*`
# channel and the tape endpoint).
PUBLIC_TRADE_FIELDS = ("seq", "price", "quantity", "aggressor", "ts")


def public_trade_of(trade: Mapping[str, Any]) -> dict[str, Any]:
    """A `trade_message` (as the trades topic carries it) as the public tape shows it."""
    return {field: trade[field] for field in PUBLIC_TRADE_FIELDS}


def position_message(position: Position) -> dict[str, Any]:
    """A position as the positions endpoint and the `positions` channel show it (its
    instrument loaded)."""
    return {
        "symbol": position.instrument.symbol,
        "quantity": plain(position.quantity),
        "average_cost": plain(position.average_cost),
        "realized_pnl": plain(position.realized_pnl),
    }


def balance_message(*, asset: str, available: Decimal, held: Decimal, pending: Decimal) -> dict:
    """One asset's balance as the `balances` channel shows it, at the asset's precision."""
    return {
        "asset": asset,
        "available": f"{available:f}",
        "held": f"{held:f}",
        "pending": f"{pending:f}",
    }
