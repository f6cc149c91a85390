"""The outgoing events of a batch (trades, book deltas, account updates) as outbox rows;
the relay produces them after commit. Their JSON shapes are trading/messages.py's."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from trading.matching.books import Book
from trading.matching.store import BatchResult, EventRow
from trading.messages import ACCOUNT_ORDERS, BOOK_DELTA, account_orders_message, book_delta_message
from tredye import kafka


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
        book.deltas = {}
        book.level_deltas = {}
        rows.append(
            EventRow(
                topic=kafka.BOOK,
                key=book.symbol,
                type=BOOK_DELTA,
                seq=next_seq(kafka.BOOK, book.symbol),
                ts=ts,
                data=book_delta_message(book.symbol, levels),
            )
        )
    for account_id, orders in result.account_orders.items():
        key = str(account_id)
        rows.append(
            EventRow(
                topic=kafka.ACCOUNT_EVENTS,
                key=key,
                type=ACCOUNT_ORDERS,
                seq=next_seq(kafka.ACCOUNT_EVENTS, key),
                ts=ts,
                data=account_orders_message(
                    account_id, orders.values(), result.account_trades.get(account_id, [])
                ),
            )
        )
    return rows
