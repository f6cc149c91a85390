"""The outgoing events of a batch (trades, book deltas, account updates) as outbox rows;
the relay produces them after commit. The JSON shape of an order is trading/messages.py's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from trading.matching.books import Book
from trading.matching.store import BatchResult, EventRow
from trading.messages import order_message
from trading.units import plain
from tredye import kafka

EVENT_TOPICS = (kafka.TRADES, kafka.BOOK, kafka.ACCOUNT_EVENTS)


def event_rows(
    books: Iterable[Book], result: BatchResult, next_seq: Callable[[str, str], int]
) -> list[EventRow]:
    """The outbox rows of a batch: its trades, a delta per changed book (from its engine
    deltas and those kept across a change of units), an update per account whose orders or
    trades changed; each with the next number of its (topic, key) stream."""
    rows = list(result.trade_messages)
    ts = kafka.now_ms()
    for book in books:
        if not book.deltas and not book.level_deltas:
            continue
        levels = book.level_deltas
        for (side, price), qty in book.deltas.items():
            levels[(side, price * book.tick)] = qty * book.lot
        bids = sorted(
            ([plain(p), plain(q)] for (s, p), q in levels.items() if s == 1),
            key=lambda level: -Decimal(level[0]),
        )
        asks = sorted(
            ([plain(p), plain(q)] for (s, p), q in levels.items() if s == -1),
            key=lambda level: Decimal(level[0]),
        )
        book.deltas = {}
        book.level_deltas = {}
        rows.append(
            EventRow(
                topic=kafka.BOOK,
                key=book.symbol,
                type="book.delta",
                seq=next_seq(kafka.BOOK, book.symbol),
                ts=ts,
                data={"symbol": book.symbol, "bids": bids, "asks": asks},
            )
        )
    for account_id, orders in result.account_orders.items():
        key = str(account_id)
        rows.append(
            EventRow(
                topic=kafka.ACCOUNT_EVENTS,
                key=key,
                type="account.orders",
                seq=next_seq(kafka.ACCOUNT_EVENTS, key),
                ts=ts,
                data={
                    "account_id": account_id,
                    "orders": [order_message(order) for order in orders.values()],
                    "trades": result.account_trades.get(account_id, []),
                },
            )
        )
    return rows
