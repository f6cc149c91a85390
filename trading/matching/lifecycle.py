"""The order lifecycle: a command applied to its book, and what the engine's events do to
orders (accept, fill, cancel, reject, expire, trigger, replace), their holds and releases, the
ledger entries of fills and the positions they move. Fills, fees and positions are the pure
functions of fills.py, fees.py and positions.py; the JSON of a trade is trading/messages.py's.
`OrderLifecycle` is an object the matcher holds: the book and the batch's result are passed to
each call; what it keeps across batches (accounts, the fees account, positions) it is given
when made."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Context, Decimal

from accounts.models import Account, Bucket, EntryKind
from accounts.services import RELEASE, EntrySpec, Leg, flow_legs
from trading.business_days import Calendar, day_end
from trading.engine import (
    Accepted,
    BookDelta,
    Canceled,
    Expired,
    Rejected,
    Replaced,
    Trade,
    Triggered,
)
from trading.engine import Side as EngineSide
from trading.matching.books import RULES_CHANGED, Book
from trading.matching.commands import (
    CANCEL,
    EXPIRE_DAY,
    PLACE,
    REPLACE,
    RULES_CHANGE,
    Command,
)
from trading.matching.fees import fee_rates, trade_charges
from trading.matching.fills import fill_apply, replace_apply
from trading.matching.positions import position_after
from trading.matching.store import BatchResult, EventRow, TradeFill
from trading.messages import TRADE, account_trade_message, trade_message
from trading.models import (
    Instrument,
    Order,
    Position,
)
from trading.rules import hold_asset, hold_for, max_fee_rate
from trading.units import ZERO, NotAMultiple, plain
from tredye import kafka

logger = logging.getLogger(__name__)

_WIDE = Context(prec=60)


class OrderLifecycle:
    """The order lifecycle of `Matcher` (trading/matching/matcher.py), which holds it.

    `account` returns the (cached) account of an id, `fees_account` the platform's fees
    account; `positions` is the matcher's cache of positions by (account id, instrument id),
    filled here from PostgreSQL on first use and emptied by the matcher's `reset`.
    """

    def __init__(
        self,
        *,
        account: Callable[[int], Account],
        fees_account: Callable[[], Account],
        positions: dict[tuple[int, int], Position],
    ) -> None:
        self.account = account
        self.fees_account = fees_account
        self.positions = positions
        # Holidays and the day's end, for each trade's settlement date; the matcher refreshes
        # it per batch (`Calendar.fresh`).
        self.calendar = Calendar(frozenset(), day_end())

    def apply(self, book: Book, command: Command, result: BatchResult, ts: int) -> None:
        """Apply one command to its book; its effects go into `result`."""
        if command.kind == EXPIRE_DAY:
            # Only DAY orders already in the book: a re-delivery is skipped by the checkpoint.
            self._events(book, book.engine.expire_day(ts), result)
            return
        if command.kind == RULES_CHANGE:
            self._rules(book, command, result, ts)
            return
        order = result.orders[command.order_id]
        if command.kind == PLACE:
            if order.status != Order.Status.PENDING_NEW:
                return  # applied before (re-delivery)
            try:
                engine_order = book.engine_order(order, order.quantity)
            except NotAMultiple:
                # Validated under rules that changed before it reached the book.
                self.close(book, order, Order.Status.REJECTED, RULES_CHANGED, result)
                return
            events = book.engine.submit(engine_order, ts)
            self._events(book, events, result, place_id=order.pk)
            return
        late = command.seq <= order.applied_seq
        if late and command.outbox_id is None:
            return  # applied before (a record without an outbox id cannot be told apart)
        if late and command.kind == REPLACE:
            # Unapplied, but a later command of the order came first (this one was lost and
            # sent again): superseded, so its extra hold goes back.
            if command.extra_hold:
                order.held += command.extra_hold
                result.replace_holds[order.pk] = (
                    result.replace_holds.get(order.pk, ZERO) + command.extra_hold
                )
                self._release(book, order, command.extra_hold, result)
                self._touch(order, result)
            return
        if not late:  # a late cancel still cancels what is left
            order.applied_seq = command.seq
        self._touch(order, result)
        if command.extra_hold:
            # The replace's extra hold now belongs to the order (released below if unused).
            order.held += command.extra_hold
            result.replace_holds[order.pk] = (
                result.replace_holds.get(order.pk, ZERO) + command.extra_hold
            )
        if order.status in Order.FINAL_STATUSES:
            self._release(book, order, order.held, result)
            return
        if command.kind == CANCEL:
            self._cancel(book, order, command, result, ts)
        else:
            self._replace(book, order, command, result, ts)

    def _cancel(
        self, book: Book, order: Order, command: Command, result: BatchResult, ts: int
    ) -> None:
        reduce_lots = None
        if command.quantity is not None:
            try:
                reduce_lots = book.lots(command.quantity)
            except ValueError:
                return
        if order.status == Order.Status.PENDING_NEW:
            # Canceled before the matcher saw the order: it never reaches the book.
            try:
                open_lots = book.lots(order.quantity)
            except ValueError:  # off the grid (the lot size changed): canceled whole
                open_lots = 0
            if reduce_lots is None or reduce_lots >= open_lots:
                self.close(book, order, Order.Status.CANCELED, "user", result)
            else:
                order.quantity -= reduce_lots * book.lot
                self._release_surplus(book, order, result)
            return
        events = book.engine.cancel(order.pk, reduce_lots, ts)
        self._events(book, events, result)

    def _replace(
        self, book: Book, order: Order, command: Command, result: BatchResult, ts: int
    ) -> None:
        if order.status == Order.Status.PENDING_NEW:
            return  # the service refuses this; a forged command changes nothing
        quantity, price = command.quantity, command.price
        if quantity is None or price is None:  # pragma: no cover - `decode` requires both
            return
        try:
            open_quantity = quantity - order.filled_quantity
            open_lots = book.lots(open_quantity)
            price_ticks = book.ticks(price)
        except ValueError:
            return
        if open_lots <= 0:
            return
        need = self._need(book, order, open_quantity, price)
        if need > order.held:
            order.reason = "replace_insufficient_hold"
            return
        events = book.engine.replace(order.pk, open_lots, price_ticks, ts)
        self._events(book, events, result)

    # -- events ---------------------------------------------------------------------------
    def _events(
        self, book: Book, events: list, result: BatchResult, place_id: int | None = None
    ) -> None:
        now = result.now
        for event in events:
            kind = type(event)
            if kind is BookDelta:
                book.deltas[(int(event.side), event.price)] = event.qty
            elif kind is Trade:
                self._trade(book, event, result)
            elif kind is Accepted:
                order = book.orders[event.order_id]
                order.status = Order.Status.NEW
                order.accepted_at = now
                self._priority(book, order)
                self._touch(order, result)
            elif kind is Canceled:
                order = book.orders[event.order_id]
                if event.remaining == 0:
                    self.close(book, order, Order.Status.CANCELED, event.reason, result)
                else:
                    order.quantity -= event.qty * book.lot
                    self._release_surplus(book, order, result)
                    self._touch(order, result)
            elif kind is Rejected:
                order = book.orders[event.order_id]
                if event.order_id == place_id and order.status == Order.Status.PENDING_NEW:
                    self.close(book, order, Order.Status.REJECTED, event.reason, result)
                else:  # a refused cancel or replace: the order stays as it was
                    order.reason = event.reason
                    self._touch(order, result)
            elif kind is Expired:
                order = book.orders[event.order_id]
                self.close(book, order, Order.Status.EXPIRED, "day", result)
            elif kind is Triggered:
                order = book.orders[event.order_id]
                order.triggered_at = now
                self._priority(book, order)
                self._touch(order, result)
            elif kind is Replaced:
                order = book.orders[event.order_id]
                replace_apply(
                    order,
                    open_quantity=event.qty * book.lot,
                    price=None if event.price is None else event.price * book.tick,
                )
                if event.price != event.old_price or event.qty > event.old_qty:
                    self._priority(book, order)
                self._release_surplus(book, order, result)
                self._touch(order, result)

    def _rules(self, book: Book, command: Command, result: BatchResult, ts: int) -> None:
        """New rules from this point of the book's command sequence on (trading/reference.py).

        Fee rates and size limits need nothing here: each order carries the fee rates it was
        placed under, and limits are checked at placement. A new tick or lot size changes the
        engine's units: whatever is still in the book then (the service refuses the change under
        open orders, so only an order that raced it) is canceled first,
        in the old units; orders still to come that are off the new grid are rejected.
        """
        rules = command.rules or {}
        if rules.get("tick_size") != book.tick or rules.get("lot_size") != book.lot:
            snapshot = book.engine.snapshot()
            for row in (*snapshot["resting"], *snapshot["stops"]):
                self._events(book, book.engine.cancel(row["id"], None, ts), result)
                order = result.changed.get(row["id"])
                if order is not None:
                    order.reason = RULES_CHANGED
            logger.warning(
                "matcher: %s now has tick %s and lot %s (%d open orders canceled)",
                book.symbol,
                plain(rules.get("tick_size")),
                plain(rules.get("lot_size")),
                len(snapshot["resting"]) + len(snapshot["stops"]),
            )
        book.rules_set(rules)

    def _priority(self, book: Book, order: Order) -> None:
        book.state.book_seq += 1
        order.book_seq = book.state.book_seq
        book.dirty = True

    def _touch(self, order: Order, result: BatchResult) -> None:
        order.updated_at = result.now
        result.changed[order.pk] = order
        result.account_orders[order.account_id][order.pk] = order

    def _need(self, book: Book, order: Order, open_quantity: Decimal, price: Decimal) -> Decimal:
        return hold_for(
            instrument=book.instrument,
            side=order.side,
            open_quantity=open_quantity,
            price=price,
            fee_rate=max_fee_rate(order),  # its own rates (decision 0010)
        )

    def _release(self, book: Book, order: Order, amount: Decimal, result: BatchResult) -> None:
        if amount <= 0:
            return
        account = self.account(order.account_id)
        asset = hold_asset(book.instrument, order.side)
        order.held -= amount
        # The ledger's RELEASE flow (accounts/services.py) by its legs: the amount is already
        # exact and the accounts are the matcher's own, so flow_entry's look-ups and validation
        # would only cost time on the hot path (ledger_post validates every entry anyway).
        result.entries.append(
            EntrySpec(
                kind=RELEASE.kind,
                reference=f"order {order.pk}",
                legs=flow_legs(RELEASE, account=account, asset=asset, amount=amount),
            )
        )

    def _release_surplus(self, book: Book, order: Order, result: BatchResult) -> None:
        open_quantity = order.quantity - order.filled_quantity
        price = order.price if order.price is not None else order.protection_price
        if price is None:  # pragma: no cover - a market order has its protection price
            raise RuntimeError(f"order {order.pk} has neither a limit nor a protection price")
        need = self._need(book, order, open_quantity, price)
        self._release(book, order, order.held - need, result)

    def close(
        self, book: Book, order: Order, status: str, reason: str, result: BatchResult
    ) -> None:
        """Close an order that leaves its book (status and reason), releasing what it holds."""
        order.status = status
        order.reason = reason
        order.closed_at = result.now
        self._release(book, order, order.held, result)
        self._touch(order, result)
        book.orders.pop(order.pk, None)

    def _trade(self, book: Book, event: Trade, result: BatchResult) -> None:
        maker = book.orders[event.maker_order_id]
        taker = book.orders[event.taker_order_id]
        price = event.price * book.tick
        quantity = event.qty * book.lot
        notional = _WIDE.multiply(price, quantity)
        # Each order pays the rates it was placed under (decision 0010).
        maker_buys = maker.side == Order.Side.BUY
        buyer, seller = (maker, taker) if maker_buys else (taker, maker)
        buyer_rate, seller_rate = fee_rates(maker_buys, maker, taker)
        amount, buyer_fee, seller_fee = trade_charges(
            buyer_notional_before=buyer.filled_notional,
            notional=notional,
            buyer_rate=buyer_rate,
            seller_rate=seller_rate,
            precision=book.quote_precision,
        )
        now = result.now
        for order, remaining_lots, charged, order_fee in (
            (maker, event.maker_remaining, amount, buyer_fee if maker is buyer else seller_fee),
            (taker, event.taker_remaining, amount, buyer_fee if taker is buyer else seller_fee),
        ):
            if fill_apply(
                order,
                quantity=quantity,
                notional=notional,
                amount=charged,
                fee=order_fee,
                is_buyer=order is buyer,
                remaining_lots=remaining_lots,
                now=now,
            ):
                self._release(book, order, order.held, result)
                book.orders.pop(order.pk, None)
            self._touch(order, result)

        instrument = book.instrument
        buyer_account = self.account(buyer.account_id)
        seller_account = self.account(seller.account_id)
        legs = [
            Leg(seller_account, instrument.base, Bucket.HELD, -quantity),
            Leg(buyer_account, instrument.base, Bucket.PENDING, quantity),
        ]
        if amount + buyer_fee:
            legs.append(Leg(buyer_account, instrument.quote, Bucket.HELD, -(amount + buyer_fee)))
        if amount - seller_fee:
            legs.append(Leg(seller_account, instrument.quote, Bucket.PENDING, amount - seller_fee))
        if buyer_fee + seller_fee:
            legs.append(
                Leg(self.fees_account(), instrument.quote, Bucket.AVAILABLE, buyer_fee + seller_fee)
            )
        result.entries.append(
            EntrySpec(
                kind=EntryKind.TRADE, reference=f"{book.symbol} trade {event.seq}", legs=tuple(legs)
            )
        )
        aggressor = Order.Side.BUY if event.aggressor_side == EngineSide.BUY else Order.Side.SELL
        result.trades.append(
            TradeFill(
                instrument_id=instrument.pk,
                seq=event.seq,
                maker_order_id=maker.pk,
                taker_order_id=taker.pk,
                buyer_id=buyer.account_id,
                seller_id=seller.account_id,
                price=price,
                quantity=quantity,
                quote_amount=amount,
                aggressor_side=aggressor,
                buyer_fee=buyer_fee,
                seller_fee=seller_fee,
                executed_at=now,
                settlement_date=self.calendar.settlement_date(now, instrument.settlement_days),
            )
        )
        book.state.trade_seq = event.seq
        book.state.last_price = price
        book.dirty = True
        self._position(instrument, buyer.account_id, quantity, price, result)
        self._position(instrument, seller.account_id, -quantity, price, result)
        message = trade_message(
            symbol=book.symbol,
            seq=event.seq,
            price=price,
            quantity=quantity,
            aggressor=aggressor,
            maker_order_id=maker.pk,
            taker_order_id=taker.pk,
            ts=event.ts,
        )
        result.trade_messages.append(
            EventRow(
                topic=kafka.TRADES,
                key=book.symbol,
                type=TRADE,
                seq=event.seq,
                ts=event.ts or kafka.now_ms(),
                data=message,
            )
        )
        for account_id, side, own_fee in (
            (buyer.account_id, "buy", buyer_fee),
            (seller.account_id, "sell", seller_fee),
        ):
            result.account_trades[account_id].append(
                account_trade_message(message, side=side, fee=own_fee)
            )

    def _position(
        self,
        instrument: Instrument,
        account_id: int,
        change: Decimal,
        price: Decimal,
        result: BatchResult,
    ) -> None:
        key = (account_id, instrument.pk)
        position = result.positions.get(key) or self.positions.get(key)
        if position is None:
            position = Position.objects.filter(
                account_id=account_id, instrument=instrument
            ).first() or Position(account_id=account_id, instrument=instrument)
            self.positions[key] = position
        position.quantity, position.average_cost, position.realized_pnl = position_after(
            position.quantity, position.average_cost, position.realized_pnl, change, price
        )
        position.updated_at = result.now
        result.positions[key] = position
