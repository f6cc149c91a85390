"""Random command sequences for the property tests, and a runner that applies them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from trading.engine import Order, OrderType, SelfTradePrevention, Side, TimeInForce

# A command is a tuple; ids are chosen by the runner so that cancels and replaces usually
# target orders that exist.
#   ("submit", type, side, qty, price, stop_price, tif, post_only, account, reuse)
#   ("cancel", target, qty)
#   ("replace", target, qty, price, stop_price)
#   ("expire",)
#   ("last", price)
Command = tuple[Any, ...]

PRICES = st.integers(96, 104)
QTYS = st.one_of(st.integers(1, 8), st.sampled_from([0, -1]))
TYPES = st.sampled_from(
    [OrderType.LIMIT] * 6 + [OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT]
)
TIFS = st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY])
TARGETS = st.integers(0, 1000)  # index into the ids used so far; large means "unknown id"


@st.composite
def submit_commands(draw: st.DrawFn) -> Command:
    order_type = draw(TYPES)
    price = draw(PRICES) if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    stop_price = draw(PRICES) if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    if draw(st.integers(0, 30)) == 0:
        price = draw(st.sampled_from([None, 0, 100]))  # sometimes wrong on purpose
    return (
        "submit",
        order_type,
        draw(st.sampled_from([Side.BUY, Side.SELL])),
        draw(QTYS),
        price,
        stop_price,
        draw(TIFS),
        draw(st.integers(0, 6)) == 0,
        draw(st.integers(1, 3)),
        draw(st.one_of(st.none(), st.none(), st.none(), st.none(), TARGETS)),
    )


COMMANDS = st.one_of(
    submit_commands(),
    submit_commands(),
    submit_commands(),
    st.tuples(st.just("cancel"), TARGETS, st.one_of(st.none(), st.none(), st.integers(-1, 6))),
    st.tuples(
        st.just("replace"),
        TARGETS,
        QTYS,
        st.one_of(st.none(), PRICES),
        st.one_of(st.none(), st.none(), st.none(), PRICES),
    ),
    st.tuples(st.just("expire")),
    st.tuples(st.just("last"), PRICES),
)

SEQUENCES = st.lists(COMMANDS, max_size=50)
STP_MODES = st.sampled_from(list(SelfTradePrevention))


class Runner:
    """Applies commands to a book (engine or reference), choosing ids deterministically."""

    def __init__(self, book: Any) -> None:
        self.book = book
        self.ids: list[int] = []
        self.next_id = 1
        self.ts = 0

    def target(self, index: int) -> int:
        if not self.ids or index >= 4 * len(self.ids):
            return 10_000 + index  # an id never used
        return self.ids[index % len(self.ids)]

    def order_for(self, command: Command) -> Order:
        _, order_type, side, qty, price, stop_price, tif, post_only, account, reuse = command
        if reuse is None:
            order_id = self.next_id
            self.next_id += 1
            self.ids.append(order_id)
        else:
            order_id = self.target(reuse)
        return Order(order_id, account, side, order_type, qty, price, stop_price, tif, post_only)

    def apply(self, command: Command) -> list[Any]:
        self.ts += 1
        kind = command[0]
        if kind == "submit":
            return self.book.submit(self.order_for(command), self.ts)
        if kind == "cancel":
            return self.book.cancel(self.target(command[1]), command[2], self.ts)
        if kind == "replace":
            _, target, qty, price, stop_price = command
            return self.book.replace(
                self.target(target), qty, price, self.ts, stop_price=stop_price
            )
        if kind == "expire":
            return self.book.expire_day(self.ts)
        return self.book.set_last_price(command[1], self.ts)
