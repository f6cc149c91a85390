"""Hypothesis properties over random command sequences."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.engine import (
    Accepted,
    Canceled,
    Expired,
    OrderBook,
    Replaced,
    SelfTradePrevention,
    Trade,
)

from .commands import SEQUENCES, STP_MODES, Command, Runner
from .helpers import apply_deltas, depth_from_deltas

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(commands: list[Command], stp: SelfTradePrevention) -> tuple[Runner, list[list[Any]]]:
    runner = Runner(OrderBook("PROP", stp=stp))
    return runner, [runner.apply(command) for command in commands]


@PROPERTY
@given(SEQUENCES, STP_MODES)
def test_the_book_is_never_crossed_after_a_call(commands, stp) -> None:
    runner = Runner(OrderBook("PROP", stp=stp))
    for command in commands:
        runner.apply(command)
        bid, ask = runner.book.best_bid(), runner.book.best_ask()
        assert bid is None or ask is None or bid[0] < ask[0]
        runner.book._verify()


@PROPERTY
@given(SEQUENCES, STP_MODES)
def test_every_order_is_filled_open_cancelled_or_expired(commands, stp) -> None:
    runner = Runner(OrderBook("PROP", stp=stp))
    book = runner.book
    # per id: [quantity (as replaced), filled, cancelled, expired] of its current life
    ledger: dict[int, list[int]] = {}

    def balanced(order_id: int, open_qty: int) -> bool:
        qty, filled, cancelled, gone = ledger[order_id]
        return qty == filled + cancelled + gone + open_qty and filled <= qty

    for command in commands:
        submitted = runner.order_for(command) if command[0] == "submit" else None
        events = runner.apply(command) if submitted is None else book.submit(submitted, 0)
        for event in events:
            kind = type(event)
            if kind is Accepted:
                assert submitted is not None
                assert event.order_id == submitted.id
                if event.order_id in ledger:  # an id used again: its last life is over
                    assert balanced(event.order_id, 0)
                ledger[event.order_id] = [submitted.qty, 0, 0, 0]
            elif kind is Trade:
                ledger[event.maker_order_id][1] += event.qty
                ledger[event.taker_order_id][1] += event.qty
            elif kind is Canceled:
                ledger[event.order_id][2] += event.qty
            elif kind is Expired:
                ledger[event.order_id][3] += event.qty
            elif kind is Replaced:
                ledger[event.order_id][0] += event.qty - event.old_qty
        for order_id in ledger:
            assert balanced(order_id, book.open_qty(order_id) or 0), (order_id, ledger)


@PROPERTY
@given(SEQUENCES, STP_MODES)
def test_book_deltas_replayed_on_an_empty_map_give_the_depth(commands, stp) -> None:
    runner = Runner(OrderBook("PROP", stp=stp))
    levels: dict[Any, int] = {}
    for command in commands:
        apply_deltas(levels, runner.apply(command))
        assert depth_from_deltas(levels) == runner.book.depth()


@PROPERTY
@given(SEQUENCES, STP_MODES)
def test_replaying_the_same_commands_gives_the_same_events(commands, stp) -> None:
    first_runner, first = run(commands, stp)
    second_runner, second = run(commands, stp)
    assert first == second
    assert first_runner.book == second_runner.book


@PROPERTY
@given(SEQUENCES, STP_MODES, st.integers(0, 50))
def test_snapshot_and_restore_give_an_equal_book(commands, stp, cut) -> None:
    runner = Runner(OrderBook("PROP", stp=stp))
    for command in commands[:cut]:
        runner.apply(command)
    snapshot = json.loads(json.dumps(runner.book.snapshot()))
    restored = OrderBook.restore(snapshot)
    assert restored == runner.book
    twin = Runner(restored)
    twin.ids, twin.next_id, twin.ts = list(runner.ids), runner.next_id, runner.ts
    for command in commands[cut:]:
        assert runner.apply(command) == twin.apply(command)
    assert restored == runner.book


@PROPERTY
@given(SEQUENCES, STP_MODES)
def test_trades_are_numbered_without_gaps_and_never_self_trade(commands, stp) -> None:
    runner = Runner(OrderBook("PROP", stp=stp))
    seq = 0
    for command in commands:
        for event in runner.apply(command):
            if type(event) is Trade:
                seq += 1
                assert event.seq == seq == runner.book.trade_seq or event.seq == seq
                assert event.qty > 0
                assert event.maker_account_id != event.taker_account_id
    assert runner.book.trade_seq == seq
